"""Issue 13: prove it on a real cluster. The fault suite's cluster cases run the real processes against a private
three-node RabbitMQ cluster started by the suite itself (tests/faults/cluster.py: the machine's RabbitMQ, three
extra nodes with their own names, ports and directories; the machine's default node is not touched). The
service reaches the cluster through a TCP proxy that plays a Kubernetes Service: each new connection goes to
the first node that accepts it, so when a node dies the robust connections reconnect, through the proxy, to a
live one.

Cases (rows of docs/reliability.md, after those of tests/faults/test_faults.py):
 8. under load, SIGKILL the node that leads (most of) the mapping queues;
 9. SIGKILL the node that leads the wait (retry) queues while events wait in them, the destination failing.
Each killed node is started again as Kubernetes restarts a StatefulSet's pod: once the service consumed again
without it (or after NODE_DOWN_MAX s), and not before NODE_DOWN_MIN s. Acceptance as in every case: 0 lost,
0 duplicated, 0 dead letters. `test_queues_replicated_on_every_node` checks that the topology's queues have a
replica on each of the three nodes.

Run with `make test-faults` or `pytest tests/faults/test_cluster.py` (about 1.5-2 minutes here: the cluster
starts once per module, in 16-20 s). Skipped where /usr/lib/rabbitmq/bin has no RabbitMQ server scripts.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from schemas.mappings import MAPPINGS
from service.topology import Topology, declare
from tests.e2e.stack import Stack
from tests.faults import cluster as rabbit
from tests.faults.cluster import ClusterProxy, Node, RabbitCluster
from tests.faults.scenario import FAULT_ENV, RETRY_DELAYS, Row, Window, run_case
from tests.faults.test_faults import check, epoch

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
NODE_DOWN_MIN = 5.0  # a killed node stays down at least this long (a pod's restart is not instant)...
NODE_DOWN_MAX = 20.0  # ...and at most this long, when the service does not consume again without it
CASE_TIMEOUT = 300  # the first case also waits for the cluster to start
RETRY_WAITS = "event failed; retrying", "record busy; requeued", "event failed transiently; waiting"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    """Three clustered nodes for the module; every process is killed at the end (also when a start failed)."""
    reason = rabbit.unavailable()
    if reason:
        pytest.skip(f"the cluster cases need RabbitMQ's server scripts: {reason}")
    nodes = RabbitCluster(size=3)
    atexit.register(nodes.close)  # should the session end without the teardown below
    nodes.start()  # closes itself when it fails
    try:
        yield nodes
    finally:
        nodes.close()


def topology_of(namespace: str) -> Topology:
    return Topology(namespace, tuple(int(d) for d in RETRY_DELAYS.split(",")))


def queue_names(namespace: str) -> tuple[list[str], list[str]]:
    """The mapping queues and the wait (retry) queues `<ns>.retry.<N>s` of a namespace, named by service.topology."""
    topology = topology_of(namespace)
    return ([topology.mapping_queue(m.name) for m in MAPPINGS],
            [topology.delay_queue(seconds) for seconds in topology.retry_delays])


def replicas(found: dict[str, dict[str, Any]], names: list[str]) -> dict[str, int]:
    """How many nodes hold each queue (a classic queue: 1, its home node)."""
    return {name: len(found[name]["members"]) if name in found else 0 for name in names}


def replication_note(cluster: RabbitCluster, found: dict[str, dict[str, Any]], namespace: str) -> str:
    mapping, delay = queue_names(namespace)
    parts = []
    for label, names in (("mapping", mapping), ("delay", delay)):
        counts = Counter(replicas(found, names).values())
        types = Counter(str(found[n].get("type")) for n in names if n in found)
        parts.append(f"{label} queues ({', '.join(f'{k} {t}' for t, k in types.items())}) with "
                     + ", ".join(f"{members} of {cluster.size} nodes: {k}" for members, k in sorted(counts.items())))
    return "replicas before the kill: " + "; ".join(parts)


def leader_of(found: dict[str, dict[str, Any]], names: list[str]) -> tuple[str, int]:
    """The node that leads most of `names`, and how many it leads."""
    leaders = Counter(str(found[n]["leader"]) for n in names if n in found and found[n].get("leader"))
    assert leaders, f"no leader known for {names}: {found}"
    return leaders.most_common(1)[0]


# ---- what the node loss cost the service, from its logs and its store --------------------------------------------
def outbox_rows(stack: Stack) -> list[tuple[str, float, float | None]]:
    """(dedupe_key, created, published) of every outbox row (epoch seconds), read from the SQLite store."""
    path = stack.database_url.split("///", 1)[1]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        rows = db.execute("SELECT dedupe_key, created_at, published_at FROM outbox_event").fetchall()
    return [(str(key), _stamp(created), None if published is None else _stamp(published))
            for key, created, published in rows]


def _stamp(value: Any) -> float:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def receptions(stack: Stack) -> list[tuple[float, str, str]]:
    """(time, dedupe_key, worker) of every "change event received" line of every worker."""
    return sorted((epoch(e), str(e.get("dedupe_key")), str(e.get("process")))
                  for e in stack.worker_log_events("change event received"))


def consumed_again(stack: Stack, killed_at: float) -> float | None:
    """Seconds from the kill until a worker received an event the api accepted after the kill (None: not yet):
    the whole path works again — webhook, outbox, relay publishing, queue, consumer."""
    accepted_after = {key for key, created, _ in outbox_rows(stack) if created > killed_at}
    received = [t for t, key, _ in receptions(stack) if key in accepted_after]
    return min(received) - killed_at if received else None


def _pause(killed_at: float, times: list[float]) -> str:
    """The longest gap after the kill in `times` (epoch seconds), as "+a s to +b s" from the kill."""
    points = [killed_at, *sorted(times)]
    if len(points) == 1:
        return "from the kill to the end (nothing after it)"
    start, end = max(itertools.pairwise(points), key=lambda pair: pair[1] - pair[0])
    return f"+{start - killed_at:.1f} s to +{end - killed_at:.1f} s"


def node_loss_figures(stack: Stack, killed_at: float) -> list[str]:
    """Notes on what the loss of a node cost: when the relays published again, when the workers received again,
    how long the events accepted around the kill waited, and how many events were received more often than their
    retries explain (RabbitMQ redelivered them, or a relay published them again after a lost confirm)."""
    outbox = outbox_rows(stack)
    got = receptions(stack)
    first_received: dict[str, float] = {}
    for t, key, _ in got:
        first_received.setdefault(key, t)
    notes = []
    resumed = consumed_again(stack, killed_at)
    published = [p for _, _, p in outbox if p is not None and p > killed_at]
    got_after = [t for t, _, _ in got if t > killed_at]
    notes.append("after the kill the first event accepted after it was received by a worker after "
                 + ("never" if resumed is None else f"{resumed:.1f} s") + "; longest pause in the relays' publishing "
                 + _pause(killed_at, published) + "; in the workers' receptions " + _pause(killed_at, got_after))
    around = [(key, created) for key, created, _ in outbox if killed_at - 5 <= created <= killed_at + 15]
    waits = [first_received[key] - created for key, created in around if key in first_received]
    if waits:
        notes.append(f"events accepted from 5 s before to 15 s after the kill: {len(around)}, from acceptance to "
                     f"a worker: median {sorted(waits)[len(waits) // 2]:.1f} s, longest {max(waits):.1f} s"
                     + (f", {len(around) - len(waits)} never received" if len(waits) < len(around) else ""))
    # Received more often than once plus its retries: grouped by (correlation id, mapping), as the retry lines
    # carry those and not the dedupe key.
    lines = stack.worker_log_events()
    received = Counter((e.get("correlation_id"), e.get("mapping")) for e in lines
                       if e.get("event") == "change event received")
    keys: dict[tuple[Any, Any], set[str]] = {}
    for e in lines:
        if e.get("event") == "change event received":
            keys.setdefault((e.get("correlation_id"), e.get("mapping")), set()).add(str(e.get("dedupe_key")))
    waited = Counter((e.get("correlation_id"), e.get("mapping")) for e in lines if e.get("event") in RETRY_WAITS)
    extra = sum(max(0, n - len(keys[group]) - waited[group]) for group, n in received.items())
    notes.append(f"{extra} receptions beyond one per event and its retries (delivered again by RabbitMQ after the "
                 f"kill, or published twice by a relay that lost a confirm); {sum(waited.values())} retry waits in "
                 "the whole case")
    return notes


# ---- the kill and the restart -------------------------------------------------------------------------------------
async def kill_and_restart(cluster: RabbitCluster, stack: Stack, victim: Node, window: Window,
                           proxy: ClusterProxy, end_window: bool = True) -> float:
    """SIGKILL `victim`, watch the survivors elect new leaders and the service consume again, then start the
    node again (after NODE_DOWN_MIN s at least, NODE_DOWN_MAX s at most). The kill's time (epoch)."""
    mapping, delay = queue_names(stack.namespace)
    connections = dict(proxy.connections)
    pid = await asyncio.to_thread(cluster.kill, victim)
    killed_at, killed_mono = time.time(), time.monotonic()
    if end_window:
        window.end()  # the fault is the crash itself; the restart below is the supervisor's
    elected: float | None = None
    resumed: float | None = None
    while time.monotonic() - killed_mono < NODE_DOWN_MAX:
        if elected is None:  # the quorum queues (a classic queue has no other node to move to)
            found = await asyncio.to_thread(cluster.queues, mapping + delay)
            quorum = [n for n in mapping + delay if found.get(n, {}).get("type") == "quorum"]
            if all(found[n].get("leader") not in (None, "", victim.name) for n in quorum):
                elected = time.monotonic() - killed_mono
        if resumed is None:
            resumed = consumed_again(stack, killed_at)
        if elected is not None and resumed is not None and time.monotonic() - killed_mono >= NODE_DOWN_MIN:
            break
        await asyncio.sleep(0.25)
    down = time.monotonic() - killed_mono
    restart = await asyncio.to_thread(cluster.restart, victim)
    window.note(f"killed {victim.name} (beam.smp pid {pid}) with SIGKILL; the proxy had forwarded "
                f"{connections} connections by node; every quorum queue of the service had a leader on a live node "
                + ("again within " + f"{elected:.1f} s" if elected is not None else "NOT within the wait")
                + " (polled with rabbitmqctl list_queues, about 0.5 s a call); the service consumed again "
                + (f"{resumed:.1f} s after the kill" if resumed is not None else "NOT while the node was down")
                + f"; the node was down {down:.1f} s, then started again and back in the cluster in {restart:.1f} s")
    return killed_at


def leftovers(cluster: RabbitCluster, namespace: str) -> tuple[str, int]:
    """What the service's queues still hold at the end of a case, once nothing moves (as RabbitMQ counts it), and
    how many of those messages are stranded: still in a wait queue once its longest delay has passed again since
    nothing moved (nobody moves them back) or unacknowledged on a mapping queue's channel (the workers are idle:
    nobody will settle them). A retry waits in a wait queue unacknowledged, held by a worker until due, and
    `rabbitmqctl list_queues` shows a quorum queue's counts as of its last statistics tick (every 5 s), so the
    queues are given the longest delay plus 10 s to show nothing held before what they still hold is counted."""
    mapping, delay = queue_names(namespace)
    started = time.monotonic()
    deadline = started + max(topology_of(namespace).retry_delays) + 10
    while True:
        found = cluster.queues(mapping + delay)
        held_now = any(found.get(n, {}).get("messages") for n in delay) or any(
            found.get(n, {}).get("messages_unacknowledged") for n in mapping)
        if time.monotonic() > deadline or not held_now:
            break
        time.sleep(1.0)
    looked = time.monotonic() - started

    def total(names: list[str], column: str) -> int:
        return sum(v for n in names if isinstance(v := found.get(n, {}).get(column), int))

    held = {n.rsplit(".", 1)[-1] if n in mapping else n.split(".", 1)[-1]: found[n].get("messages")
            for n in mapping + delay if n in found and found[n].get("messages")}
    unacked, waiting = total(mapping, "messages_unacknowledged"), total(delay, "messages")
    note = (f"at the end the mapping queues held {total(mapping, 'messages_ready')} ready and {unacked} "
            f"unacknowledged messages, the wait queues {waiting}" + (f" ({held})" if held else "")
            + (f" (read after {looked:.0f} s of waiting for them to show nothing held)" if looked >= 1 else ""))
    if unacked:  # who holds them: the channels RabbitMQ counts them against
        via = cluster.live_nodes()[0]
        channels = json.loads(cluster.ctl(via, "list_channels", "name", "messages_unacknowledged", "consumer_count",
                                          "--formatter", "json", "-q"))
        note += "; channels with unacknowledged messages: " + (", ".join(
            f"{c['name']} ({c['messages_unacknowledged']} unacked, {c['consumer_count']} consumers)"
            for c in channels if c.get("messages_unacknowledged")) or "none")
    return note, unacked + waiting


def queue_state(found: dict[str, dict[str, Any]], names: list[str]) -> str:
    leaders = Counter(str(found[n].get("leader") or "?") for n in names if n in found)
    return ", ".join(f"{node}: {k}" for node, k in leaders.most_common())


# ---- the cases ------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(CASE_TIMEOUT)
async def test_queues_replicated_on_every_node(cluster: RabbitCluster) -> None:
    """The topology the service declares has a replica of every mapping and delay queue on each node."""
    topology = topology_of(f"repl-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect(cluster.nodes[0].url)
    try:
        await declare(await connection.channel(), topology)
        found = await asyncio.to_thread(cluster.queues)
        mapping, delay = queue_names(topology.namespace)
        counts = replicas(found, mapping + delay + [topology.dead_queue])
        under = {name: f"{counts[name]} ({found.get(name, {}).get('type')})" for name in counts
                 if counts[name] != cluster.size}
        channel = await connection.channel()
        for name in counts:
            await channel.queue_delete(name)
        for exchange in (topology.events_exchange, topology.retry_exchange, topology.dead_exchange):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()
    assert not under, f"queues without a replica on each of the {cluster.size} nodes (replicas, type): {under}"


@pytest.mark.timeout(CASE_TIMEOUT)
async def test_node_leading_mapping_queues_killed(tmp_path: Path, cluster: RabbitCluster,
                                                   fault_rows: dict[int, Row]) -> None:
    proxy = ClusterProxy(cluster)
    await proxy.start()
    killed_at = 0.0
    try:
        async with Stack(tmp_path, workers=2, env={**FAULT_ENV, "BCSYNC_BROKER_URL": proxy.url}) as stack:
            mapping, delay = queue_names(stack.namespace)

            async def kill(stack: Stack, window: Window) -> None:
                nonlocal killed_at
                found = await asyncio.to_thread(cluster.queues, mapping + delay)
                window.note(replication_note(cluster, found, stack.namespace))
                victim_name, led = leader_of(found, mapping)
                window.note(f"{victim_name} led {led} of the {len(mapping)} mapping queues "
                            f"(leaders: {queue_state(found, mapping)})")
                window.begin()
                killed_at = await kill_and_restart(cluster, stack, cluster.node(victim_name), window, proxy)
                after = await asyncio.to_thread(cluster.queues, mapping)
                window.note(f"mapping queue leaders after the restart: {queue_state(after, mapping)}")

            row = await run_case(stack, 8, "RabbitMQ node leading the mapping queues killed (SIGKILL)", kill,
                                 broker_url=proxy.url)
            row.notes += node_loss_figures(stack, killed_at)
            note, row.stranded = await asyncio.to_thread(leftovers, cluster, stack.namespace)
            row.notes.append(note)
            row.notes.append(cluster_note(cluster))
    finally:
        await proxy.close()
    fault_rows[row.case] = row
    check(row)


@pytest.mark.timeout(CASE_TIMEOUT)
async def test_node_leading_delay_queues_killed_while_events_wait(tmp_path: Path, cluster: RabbitCluster,
                                                                  fault_rows: dict[int, Row]) -> None:
    proxy = ClusterProxy(cluster)
    await proxy.start()
    killed_at = 0.0
    try:
        async with Stack(tmp_path, workers=2, env={**FAULT_ENV, "BCSYNC_BROKER_URL": proxy.url}) as stack:
            mapping, delay = queue_names(stack.namespace)

            async def kill(stack: Stack, window: Window) -> None:
                nonlocal killed_at
                found = await asyncio.to_thread(cluster.queues, mapping + delay)
                window.note(replication_note(cluster, found, stack.namespace))
                window.begin()
                # Both systems' APIs answer 500 to the integration until further notice: each event fails after the
                # connector's retries and goes round the delay queues.
                await stack.bc.faults(status=500, count=10**6)
                await stack.dv.faults(status=500, count=10**6)
                deadline = time.monotonic() + 30
                waiting: dict[str, Any] = {}
                while time.monotonic() < deadline:
                    found = await asyncio.to_thread(cluster.queues, delay)
                    waiting = {n: found[n].get("messages") for n in delay if n in found}
                    if sum(v for v in waiting.values() if isinstance(v, int)) >= 3:
                        break
                    await asyncio.sleep(0.2)
                failing = time.monotonic() - window.started
                victim_name, led = leader_of(found, delay)
                window.note(f"after {failing:.1f} s of 500s {sum(v for v in waiting.values() if isinstance(v, int))} "
                            f"events waited in the delay queues ({waiting}); {victim_name} led {led} of the "
                            f"{len(delay)} delay queues (leaders: {queue_state(found, delay)})")
                victim = cluster.node(victim_name)

                async def restore_destination() -> None:
                    await asyncio.sleep(1.0)
                    await stack.bc.clear_faults()
                    await stack.dv.clear_faults()
                    window.end()
                    window.note(f"the destination answered again 1 s after the kill ({window.ended - window.started:.1f} "
                                "s of 500s in all)")

                restored = asyncio.create_task(restore_destination())
                try:
                    killed_at = await kill_and_restart(cluster, stack, victim, window, proxy, end_window=False)
                finally:
                    await restored

            row = await run_case(stack, 9, "RabbitMQ node leading the delay queues killed while events wait there",
                                 kill, broker_url=proxy.url)
            row.notes += node_loss_figures(stack, killed_at)
            row.notes.append(relay_note(stack))
            note, row.stranded = await asyncio.to_thread(leftovers, cluster, stack.namespace)
            row.notes.append(note)
            row.notes.append(cluster_note(cluster))
    finally:
        await proxy.close()
    fault_rows[row.case] = row
    check(row)


def relay_note(stack: Stack) -> str:
    """What the workers' retry waits (consumers/retry_waits.py) and their publishing in a message's place met."""
    lines = stack.worker_log_events()
    count = Counter(str(e.get("event")) for e in lines)
    refused = Counter(str(e.get("error", "")).split(":", 1)[0] for e in lines
                      if e.get("event") in ("retry could not be moved back yet", "could not publish; trying again"))
    return (f"retry waits: {count['retry delivered again; moved back at once']} retries delivered again (their "
            f"worker's channel was lost) and moved back at once, overdue; publishing refused and tried again: "
            f"{count['retry could not be moved back yet']} times moving a retry back, "
            f"{count['could not publish; trying again']} times publishing a retry or dead letter"
            + (f" ({', '.join(f'{k} {v}' for k, v in refused.most_common())})" if refused else "")
            + f"; acknowledgements lost after the move: {count['retry moved back; its acknowledgement was lost with the channel']}")


def cluster_note(cluster: RabbitCluster) -> str:
    return (f"the cluster ({cluster.size} nodes, RabbitMQ {rabbit.version()}) started in {cluster.start_seconds:.1f} s: "
            f"the nodes' parallel boot {cluster.boot_seconds:.1f} s, the joins of nodes 2 and 3 "
            f"{cluster.join_seconds:.1f} s")
