"""Background jobs of the worker: full synchronization, catch-up, the subscription keeper.

`JobRunner.run` is started by `run_worker` beside the consumers. The store holds every job's state;
control messages on the `<ns>.jobs` fanout exchange only wake workers up (each also polls the store).
"""
