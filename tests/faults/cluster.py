"""A private three-node RabbitMQ cluster for the cluster cases of the fault suite (tests/faults/test_cluster.py),
and the TCP proxy that plays a Kubernetes Service in front of it.

The nodes run the machine's RabbitMQ (the Debian package's scripts under /usr/lib/rabbitmq/bin, called directly:
the /usr/sbin wrappers would `su rabbitmq`, whose HOME holds the default node's cookie) next to the machine's
default node, which is not touched: each node has its own name (`bcsyncf<i>_<run>@localhost`), AMQP and
distribution ports, data and log directories under one temporary directory, its own config files and no
plugins. The three share an Erlang cookie of their own, read from `$HOME/.erlang.cookie` with HOME set to the
temporary directory (for the servers and for every rabbitmqctl call). Nodes 2 and 3 join node 1 as an
operator does it (`stop_app`, `join_cluster`, `start_app`).

Config of every node (rabbitmq.conf): `consumer_timeout = 1800000` (30 min, explicit). Quorum queues get a
replica on every node: RabbitMQ 3.10 has no rabbitmq.conf key for the initial group size; the default comes
from the application setting `rabbit.quorum_cluster_size` (default 3), which advanced.config sets explicitly,
and a queue's `x-quorum-initial-group-size` argument overrides it.

Every process started here is killed (SIGKILL to its process group) by `close()`, also after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import TcpProxy, free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
CONSUMER_TIMEOUT_MS = 1_800_000
QUORUM_CLUSTER_SIZE = 3


def version() -> str:
    try:
        done = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def unavailable() -> str | None:
    """Why a private cluster cannot be run here (None when it can)."""
    for script in ("rabbitmq-server", "rabbitmqctl"):
        if not (RABBIT_BIN / script).exists():
            return f"no {RABBIT_BIN / script} (the Debian rabbitmq-server package)"
    if shutil.which("erl") is None:
        return "no Erlang runtime (erl) on PATH"
    return None


@dataclass
class Node:
    index: int
    name: str  # bcsyncf1_<run>@localhost
    amqp_port: int
    dist_port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.dir / "rabbitmq.pid"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def os_pid(self) -> int:
        """The OS pid of the node's Erlang VM (beam.smp), from the pid file RabbitMQ writes at boot."""
        pid = int(self.pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        assert comm.startswith("beam"), f"pid {pid} of {self.name} is {comm!r}, not the Erlang VM"
        return pid


@dataclass
class CtlError(Exception):
    command: list[str]
    returncode: int
    output: str

    def __str__(self) -> str:
        return f"{' '.join(self.command[1:])} -> {self.returncode}: {self.output[-1500:]}"


@dataclass
class RabbitCluster:
    """`size` RabbitMQ nodes on this machine, clustered. `start()` returns when every node runs in the cluster."""

    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bcsync-faults-rabbit-")))
    nodes: list[Node] = field(default_factory=list)
    start_seconds: float = 0.0  # the whole start: boot of the nodes, joins, cluster seen running
    boot_seconds: float = 0.0  # the nodes' parallel boot alone
    join_seconds: float = 0.0

    def __post_init__(self) -> None:
        run = secrets.token_hex(3)
        (self.root / ".erlang.cookie").write_text(secrets.token_hex(20).upper())
        os.chmod(self.root / ".erlang.cookie", 0o400)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("# empty: the machine's /etc/rabbitmq/rabbitmq-env.conf names the default node\n")
        ports: set[int] = set()
        while len(ports) < 2 * self.size:
            ports.add(free_port())
        amqp, dist = sorted(ports)[: self.size], sorted(ports)[self.size:]
        for i in range(1, self.size + 1):
            directory = self.root / f"node{i}"
            (directory / "log").mkdir(parents=True)
            (directory / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{amqp[i - 1]}\n"
                f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n"
                "log.console = false\nlog.file.level = info\n"
                # A loaded 2-core machine: no node should be taken for gone because it was slow to answer.
                "net_ticktime = 60\n")
            (directory / "advanced.config").write_text(
                f"[{{rabbit, [{{quorum_cluster_size, {QUORUM_CLUSTER_SIZE}}}]}}].\n")
            self.nodes.append(Node(i, f"bcsyncf{i}_{run}@localhost", amqp[i - 1], dist[i - 1], directory))

    # ---- processes ----------------------------------------------------------------------------------------
    def _env(self, node: Node | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env |= {"HOME": str(self.root), "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
                "ERL_EPMD_ADDRESS": "127.0.0.1", "LC_ALL": "C.UTF-8"}
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.name, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.amqp_port), "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"), "RABBITMQ_LOG_BASE": str(node.dir / "log"),
                "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.dir / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(node.pid_file),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            }
        return env

    def _launch(self, node: Node) -> None:
        assert not node.alive, f"{node.name} is running"
        node.pid_file.unlink(missing_ok=True)
        node.starts += 1
        with (node.dir / f"server-{node.starts}.out").open("ab") as out:
            # A session of its own: close() kills the script, erl and beam.smp as one process group.
            node.process = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self._env(node),
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=node.dir, start_new_session=True)

    def ctl(self, node: Node, *args: str, timeout: float = 90, tool: str = "rabbitmqctl") -> str:
        """A rabbitmqctl (or rabbitmq-queues, ...) command against `node`; its output (CtlError on failure)."""
        command = [str(RABBIT_BIN / tool), "-n", node.name, *args]
        try:
            done = subprocess.run(command, env=self._env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CtlError(command, -1, f"timed out after {timeout} s: {exc.stdout!r} {exc.stderr!r}") from exc
        if done.returncode != 0:
            raise CtlError(command, done.returncode, done.stdout + done.stderr)
        return done.stdout

    def _await_startup(self, node: Node, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not node.alive:
                raise AssertionError(f"{node.name} exited ({node.process and node.process.returncode}):\n"
                                     f"{self.log_tail(node)}")
            try:
                self.ctl(node, "await_startup", "--timeout", "30", timeout=45)
                return
            except CtlError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def start(self) -> None:
        """Boot every node (in parallel), join nodes 2.. to node 1, wait until all run in the cluster."""
        started = time.monotonic()
        try:
            for node in self.nodes:
                self._launch(node)
            with ThreadPoolExecutor(self.size) as pool:
                list(pool.map(self._await_startup, self.nodes))
            self.boot_seconds = time.monotonic() - started
            first = self.nodes[0]
            for node in self.nodes[1:]:
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", first.name)
                self.ctl(node, "start_app")
            self.wait_running(len(self.nodes))
            self.join_seconds = time.monotonic() - started - self.boot_seconds
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - started

    def running_nodes(self, via: Node | None = None) -> list[str]:
        node = via or self.live_nodes()[0]
        status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json", "-q"))
        return sorted(status.get("running_nodes", []))

    def wait_running(self, count: int, timeout: float = 120) -> float:
        """Wait until `count` nodes run in the cluster (as a live node sees it); the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                running = self.running_nodes()
            except (CtlError, IndexError):
                running = []
            if len(running) >= count:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(running)} of {count} nodes running after {timeout} s: {running}")
            time.sleep(0.5)

    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def kill(self, node: Node) -> int:
        """SIGKILL the node's Erlang VM (a crash: no clean shutdown, nothing flushed); its OS pid."""
        pid = node.os_pid()
        os.kill(pid, signal.SIGKILL)
        assert node.process is not None
        try:
            node.process.wait(timeout=30)  # the rabbitmq-server script exits with its VM
        except subprocess.TimeoutExpired:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=10)
        return pid

    def restart(self, node: Node) -> float:
        """Start a killed node again (as Kubernetes restarts the pod of a StatefulSet): it finds its cluster in
        its data directory. Returns once every node runs in the cluster; the seconds it took."""
        started = time.monotonic()
        self._launch(node)
        self._await_startup(node)
        self.wait_running(len(self.nodes))
        return time.monotonic() - started

    def queues(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """`rabbitmqctl list_queues name type leader members online messages messages_ready messages_unacknowledged
        consumers` (vhost /) by name, as a live node
        sees it; only `names` when given. A classic queue has no members: its `leader` and only member here is its
        home node (the node of its process; a classic queue without mirroring lives there alone)."""
        via = self.live_nodes()[0]
        rows = json.loads(self.ctl(via, "list_queues", "name", "type", "leader", "members", "online", "messages",
                                   "messages_ready", "messages_unacknowledged", "consumers", "--formatter", "json",
                                   "-q"))
        wanted = set(names) if names is not None else None
        found = {row["name"]: row for row in rows if wanted is None or row["name"] in wanted}
        classic = [name for name, row in found.items() if row.get("type") not in ("quorum", "stream")]
        if classic:
            # The JSON formatter prints a pid without its node; the table shows `<node.N.N.N>`.
            for line in self.ctl(via, "list_queues", "name", "pid", "-q").splitlines()[1:]:
                name, _, pid = line.rpartition("\t")
                if name in classic:
                    home = pid.strip("<>").rsplit(".", 3)[0]
                    found[name]["leader"], found[name]["members"] = home, [home]
        for row in found.values():
            for column in ("members", "online"):
                if not isinstance(row.get(column), list):
                    row[column] = []
        return found

    def log_tail(self, node: Node, chars: int = 3000) -> str:
        parts = []
        for path in sorted(node.dir.glob("server-*.out")) + sorted((node.dir / "log").glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def close(self) -> None:
        """SIGKILL every process this cluster started (each node's process group), delete its directory."""
        for node in self.nodes:
            if node.process is None:
                continue
            group = node.process.pid  # the session started for this node
            if node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            else:  # the script is gone: its VM, should it have outlived it, is still in the node's group
                try:
                    pid = int(node.pid_file.read_text().strip())
                    if os.getpgid(pid) == group and Path(f"/proc/{pid}/comm").read_text().startswith("beam"):
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=10)
            node.process = None
        if os.environ.get("BCSYNC_KEEP_CLUSTER_DIR") != "1":
            shutil.rmtree(self.root, ignore_errors=True)


class ClusterProxy(TcpProxy):
    """A Kubernetes Service in front of the cluster: every new connection goes to the first node, in order, that
    accepts it (a killed node refuses at once); an open connection stays with its node and breaks with it."""

    def __init__(self, cluster: RabbitCluster) -> None:
        super().__init__(target_port=cluster.nodes[0].amqp_port)
        self.cluster = cluster
        self.connections: dict[str, int] = {}  # node name -> connections forwarded to it

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        error: OSError | None = None
        for node in self.cluster.nodes:
            try:
                opened = await asyncio.open_connection("127.0.0.1", node.amqp_port)
            except OSError as exc:
                error = exc
                continue
            self.connections[node.name] = self.connections.get(node.name, 0) + 1
            return opened
        raise error or OSError("no node")
