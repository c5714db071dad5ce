"""The whole sandbox in a thread of the test process, on free ports (imports nothing of the service)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.main import serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


START_TRIES = 5


def start_sandbox_thread(tmp: Path, **readings: Any) -> tuple[SandboxConfig, Any]:
    """The whole sandbox on free ports in a thread of this process (with `readings`, e.g. custom_api=False);
    returns its config and a stopper.

    A port found free can be taken by another test process before the sandbox binds it (seen in CI: the
    sandbox's thread died, and the test talked to someone else's server). The sandbox is then started again on
    new ports: a server that cannot bind its port ends the sandbox's thread at once (`serve` stops the others).
    """
    for _ in range(START_TRIES):
        config = SandboxConfig(bc_port=free_port(), dataverse_port=free_port(), entra_port=free_port(),
                               ca_file=str(tmp / "ca.pem"), **readings)
        started = _start(config)
        if started is not None:
            return config, started
    raise AssertionError(f"the sandbox did not start on free ports in {START_TRIES} tries")


def _start(config: SandboxConfig) -> Any:
    """The stopper of a sandbox started on the config's ports, or None when it could not have them."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        try:
            with contextlib.suppress(BaseException):  # a port taken meanwhile: uvicorn exits; we try again
                loop.run_until_complete(serve(config, stop))
        finally:  # nothing left pending for the garbage collector to complain about in a later test
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    for port in (config.entra_port, config.bc_port, config.dataverse_port):
        while thread.is_alive():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {port} never listened"
                time.sleep(0.05)
    time.sleep(0.2)  # the ports answer: if one was someone else's, our server failed to bind it and ended
    if not thread.is_alive():
        thread.join(10)
        return None

    def stopper() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        assert not thread.is_alive()

    return stopper
