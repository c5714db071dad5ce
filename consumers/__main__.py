"""`python -m consumers` runs the worker, like `bcsync worker`."""

from service.runners import run_worker

run_worker()
