"""`python -m consumers` runs the worker, like `bcsync worker`."""

from consumers.run import run_worker

run_worker()
