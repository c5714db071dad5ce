"""The whole sandbox in a thread of the test process, on free ports (imports nothing of the service)."""

from __future__ import annotations

import asyncio
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


def start_sandbox_thread(tmp: Path, **readings: Any) -> tuple[SandboxConfig, Any]:
    """The whole sandbox on free ports in a thread of this process (with `readings`, e.g. custom_api=False);
    returns its config and a stopper."""
    config = SandboxConfig(bc_port=free_port(), dataverse_port=free_port(), entra_port=free_port(),
                           ca_file=str(tmp / "ca.pem"), **readings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(config, stop),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    for port in (config.entra_port, config.bc_port, config.dataverse_port):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {port} never listened"
                time.sleep(0.05)

    def stopper() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        assert not thread.is_alive()

    return config, stopper


