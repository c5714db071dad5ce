"""`bcsync demo`: the sandbox, the api and a worker on this machine, seeded, with a scripted story."""
