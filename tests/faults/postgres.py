"""A private PostgreSQL server for the restart case: its own data directory and port, so the test can stop
and start it without disturbing the machine's shared server (other test runs use that one).

The server binaries refuse to run as root, so when the tests run as root the commands run as the `postgres`
user (through `runuser`), in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness import free_port


def binaries() -> Path | None:
    """The newest installed server's bin directory (Debian layout), or PATH's initdb's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why a private server cannot be run here (None when it can)."""
    bin_dir = binaries()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        return "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: cannot start PostgreSQL as another user"
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            return "running as root and there is no `postgres` user to run the server as"
    return None


class PrivatePostgres:
    """initdb into a temporary directory, trust authentication, listening on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        bin_dir = binaries()
        assert bin_dir is not None, unavailable()
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="bcsync-faults-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/bcsync"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        # Durability across a crash of the server process does not need fsync (the kernel keeps the pages);
        # turning it off spares the shared machine's disk. The socket lives in our directory, not /run.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\nmax_connections = 200\n")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "bcsync")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash (no checkpoint; the next start replays the WAL); `fast` a clean stop."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def close(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
