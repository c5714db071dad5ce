"""`python -m service` runs the api, like `bcsync api`."""

from service.runners import run_api

run_api()
