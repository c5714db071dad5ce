"""Start and stop the demo's processes (sandbox, api, worker), each logging to a file."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sandbox.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_TENANT_ID


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick(port: int) -> int:
    """The usual port when it is free, else any free one."""
    if port_free(port):
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@dataclass
class DemoStack:
    workdir: Path
    bc_port: int = field(default_factory=lambda: pick(8081))
    dataverse_port: int = field(default_factory=lambda: pick(8082))
    entra_port: int = field(default_factory=lambda: pick(8443))
    api_port: int = field(default_factory=lambda: pick(8000))
    namespace: str = field(default_factory=lambda: os.environ.get("BCSYNC_NAMESPACE", "bcsync-demo"))
    # signs the console's session cookies; new each run, so a cookie from an earlier demo is worth nothing
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ca_file(self) -> str:
        return str(self.workdir / "sandbox-ca.pem")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def console_url(self) -> str:
        return f"{self.api_url}/console"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")}
        env.update({
            "BCSYNC_DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir / 'bcsync-demo.db'}",
            "BCSYNC_NAMESPACE": self.namespace,
            "BCSYNC_BROKER_URL": os.environ.get("BCSYNC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            "BCSYNC_TENANT_ID": DEMO_TENANT_ID, "BCSYNC_CLIENT_ID": DEMO_CLIENT_ID,
            "BCSYNC_CLIENT_SECRET": DEMO_CLIENT_SECRET, "BCSYNC_BC_COMPANY_ID": DEMO_COMPANY_ID,
            "BCSYNC_AUTHORITY_HOST": f"https://127.0.0.1:{self.entra_port}",
            "BCSYNC_BC_URL": f"http://127.0.0.1:{self.bc_port}/v2.0/{{tenant}}/production",
            "BCSYNC_DATAVERSE_URL": f"http://127.0.0.1:{self.dataverse_port}",
            "BCSYNC_DATAVERSE_WEBHOOK_KEY": "demo-webhook-key", "BCSYNC_BC_CLIENT_STATE": "demo-client-state",
            "BCSYNC_PUBLIC_URL": self.api_url,  # the console's sign-in redirect comes back here
            "BCSYNC_CONSOLE_SESSION_SECRET": self.session_secret, "BCSYNC_ADMIN_TOKEN": "demo-admin-token",
            "BCSYNC_HOST": "127.0.0.1", "BCSYNC_PORT": str(self.api_port), "BCSYNC_RECONCILE_MINUTES": "0",
            "BCSYNC_WORKER_METRICS_PORT": "0", "REQUESTS_CA_BUNDLE": self.ca_file, "SSL_CERT_FILE": self.ca_file,
        })
        return env

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            [sys.executable, "-m", "service.cli", *args], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True,
        )

    def start(self) -> None:
        database = self.workdir / "bcsync-demo.db"
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            path.unlink(missing_ok=True)
        self._start("sandbox", ["sandbox", "--bc-port", str(self.bc_port), "--dataverse-port",
                                str(self.dataverse_port), "--entra-port", str(self.entra_port),
                                "--ca-file", self.ca_file])
        for port in (self.bc_port, self.dataverse_port, self.entra_port):
            self._require(wait_port(port, 30), "sandbox", f"port {port}")
        self._start("api", ["api"])
        self._require(self._ready(60), "api", "/readyz")
        self._start("worker", ["worker"])

    def _ready(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if self.processes["api"].poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def _require(self, ok: bool, name: str, what: str) -> None:
        if not ok:
            tail = (self.workdir / f"{name}.log").read_text()[-2000:]
            self.stop()
            raise RuntimeError(f"{name} did not come up ({what}); its log ends with:\n{tail}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()
