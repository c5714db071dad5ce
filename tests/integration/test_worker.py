"""The worker against the real RabbitMQ: ack on success, retry through the wait queues, dead letters."""

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika

from consumers.errors import MappingHeld
from consumers.handlers import HANDLERS, Handler
from consumers.retry_waits import RetryWaits
from consumers.worker import Worker
from schemas.events import ChangeEvent
from schemas.mappings import MAPPINGS, TableMapping
from service.broker import Broker
from service.connectors.http import ApiError
from service.metrics import DEAD_LETTERS
from service.topology import (
    ATTEMPT_HEADER,
    DUE_HEADER,
    ERROR_HEADER,
    FAILING_SINCE_HEADER,
    MAPPING_HEADER,
    TRANSIENT_HEADER,
    Topology,
    declare,
)
from tests.conftest import BROKER_URL
from tests.harness import drain, queue_depths, wait_for


def event(entity: str, record: str) -> ChangeEvent:
    return ChangeEvent(source="dataverse", entity=entity, record_id=record, change_type="updated",
                       occurred_at=datetime.now(UTC), dedupe_key=f"k-{record}", correlation_id=f"c-{record}")


async def publish(broker: Broker, e: ChangeEvent) -> None:
    await broker.publish(broker.topology.events_exchange, e.routing_key, e.model_dump_json().encode(),
                         message_id=e.dedupe_key, correlation_id=e.correlation_id)


@contextlib.asynccontextmanager
async def consuming(broker: Broker, handlers: dict[str, Handler], prefetch: int, **options: Any) -> AsyncIterator[Worker]:
    """A worker as `run_worker` runs it: the mapping consumers and the retry waits that bring retries back."""
    waits = RetryWaits(broker)
    await waits.start()
    worker = Worker(broker, prefetch=prefetch, handlers=handlers, **options)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
        await waits.stop()


async def test_handlers_get_events_retries_follow_the_delays_and_then_dead_letter(rabbit, namespace) -> None:
    topology = Topology(namespace, retry_delays=(1, 1))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    calls: Counter[str] = Counter()
    seen_by: dict[str, str] = {}

    async def handler(mapping: TableMapping, e: ChangeEvent) -> None:
        calls[e.record_id] += 1
        seen_by[e.record_id] = mapping.name
        if e.record_id == "flaky" and calls["flaky"] < 3:
            raise RuntimeError("BC answered 503")
        if e.record_id == "broken":
            raise ValueError("cannot map this record")

    dead_before = DEAD_LETTERS.labels("CONTACT")._value.get()
    async with consuming(broker, dict.fromkeys(HANDLERS, handler), prefetch=10):
        await publish(broker, event("account", "fine"))
        await publish(broker, event("account", "flaky"))
        await publish(broker, event("contact", "broken"))
        await broker.publish("", topology.mapping_queue("CUSTOMER"), b"not an event", message_id="x",
                             correlation_id="x")
        await wait_for(lambda: calls["flaky"] == 3 and calls["broken"] == 3, timeout=20)
        await wait_for(lambda: DEAD_LETTERS.labels("CONTACT")._value.get() == dead_before + 1)
    assert calls == {"fine": 1, "flaky": 3, "broken": 3}  # 1 try + 2 retries, then given up
    assert seen_by == {"fine": "CUSTOMER", "flaky": "CUSTOMER", "broken": "CONTACT"}
    dead = await drain(rabbit, topology.dead_queue)
    by_mapping = {m.headers[MAPPING_HEADER]: m for m in dead}
    assert set(by_mapping) == {"CONTACT", "CUSTOMER"}
    broken = by_mapping["CONTACT"]
    assert ChangeEvent.model_validate_json(broken.body).record_id == "broken"
    assert broken.headers[ATTEMPT_HEADER] == 3 and "cannot map this record" in broken.headers[ERROR_HEADER]
    assert "not a ChangeEvent" in by_mapping["CUSTOMER"].headers[ERROR_HEADER]
    depths = await queue_depths(rabbit, [topology.mapping_queue(m.name) for m in MAPPINGS]
                                + [topology.delay_queue(1)])
    assert set(depths.values()) == {0}  # everything acknowledged, nothing stuck
    await broker.close()


async def test_an_event_for_two_mappings_reaches_both(rabbit, namespace) -> None:
    broker = Broker(BROKER_URL, Topology(namespace))
    await broker.connect()
    got: list[str] = []

    async def handler(mapping: TableMapping, e: ChangeEvent) -> None:
        got.append(mapping.name)

    worker = Worker(broker, prefetch=5, handlers=dict.fromkeys(HANDLERS, handler))
    await worker.start()
    await publish(broker, event("product", "p1"))
    await wait_for(lambda: len(got) == 2)
    await asyncio.sleep(0.2)
    await worker.stop()
    assert sorted(got) == ["ITEM-PRODUCT", "RESOURCE-PRODUCT"]
    await broker.close()


async def test_an_unacknowledged_event_survives_a_worker_that_dies(rabbit, namespace) -> None:
    topology = Topology(namespace)
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    started = asyncio.Event()

    async def hangs(mapping: TableMapping, e: ChangeEvent) -> None:
        started.set()
        await asyncio.sleep(3600)

    worker = Worker(broker, prefetch=1, handlers=dict.fromkeys(HANDLERS, hangs))
    await worker.start()
    await publish(broker, event("account", "r1"))
    await asyncio.wait_for(started.wait(), 10)
    await broker.close()  # the process is gone before it acknowledged
    messages = await drain(rabbit, topology.mapping_queue("CUSTOMER"))
    assert [ChangeEvent.model_validate_json(m.body).record_id for m in messages] == ["r1"]


async def test_transient_failures_wait_without_spending_the_retry_budget(rabbit, namespace) -> None:
    """Issue 13 (4): a destination that answers 503 for longer than the whole retry schedule does not
    dead-letter the event; a record error spends the budget as before."""
    topology = Topology(namespace, retry_delays=(1, 1))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    calls: Counter[str] = Counter()

    async def handler(mapping: TableMapping, e: ChangeEvent) -> None:
        calls[e.record_id] += 1
        if e.record_id == "down" and calls["down"] <= 5:  # more failures than the budget's 1 + 2
            raise ApiError(503, "ServiceUnavailable", "maintenance", system="BC")
        if e.record_id == "throttled" and calls["throttled"] <= 4:
            raise ApiError(0, "ConnectError", "no answer (timeout or connection error)", system="Dataverse")

    async with consuming(broker, dict.fromkeys(HANDLERS, handler), prefetch=10):
        await publish(broker, event("account", "down"))
        await publish(broker, event("contact", "throttled"))
        await wait_for(lambda: calls["down"] == 6 and calls["throttled"] == 5, timeout=30)
        await asyncio.sleep(0.5)
    assert await drain(rabbit, topology.dead_queue) == []
    await broker.close()


async def test_transient_failures_dead_letter_after_the_transient_limit(rabbit, namespace) -> None:
    topology = Topology(namespace, retry_delays=(1,))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    calls: Counter[str] = Counter()

    async def handler(mapping: TableMapping, e: ChangeEvent) -> None:
        calls[e.record_id] += 1
        raise ApiError(504, "GatewayTimeout", "still down", system="BC")

    async with consuming(broker, dict.fromkeys(HANDLERS, handler), prefetch=10, transient_hours=2.5 / 3600):
        await publish(broker, event("account", "gone-for-good"))
        dead = await _wait_dead(rabbit, topology, timeout=20)
    assert calls["gone-for-good"] >= 3  # it waited more than the one-attempt budget allows
    assert "failing for" in dead.headers[ERROR_HEADER] and "504" in dead.headers[ERROR_HEADER]
    assert dead.headers[ATTEMPT_HEADER] == 0  # no attempt of the budget was spent
    await broker.close()


async def _wait_dead(rabbit, topology: Topology, timeout: float):  # type: ignore[no-untyped-def]
    queue = await rabbit.get_queue(topology.dead_queue, ensure=False)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.2)
    raise AssertionError("nothing was dead-lettered")


async def test_an_event_of_a_mapping_held_meanwhile_waits_in_its_queue(rabbit, namespace) -> None:
    """Issue 13 (7): the run finds the mapping held: the event goes back to the mapping's queue (not nacked,
    which a quorum queue counts toward its delivery limit); a held dependency waits like a transient failure."""
    topology = Topology(namespace, retry_delays=(1, 1))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    calls: Counter[str] = Counter()
    release = asyncio.Event()

    async def handler(mapping: TableMapping, e: ChangeEvent) -> None:
        calls[e.record_id] += 1
        if e.record_id == "own" and not release.is_set():
            raise MappingHeld(mapping.name)
        if e.record_id == "dependency" and calls["dependency"] <= 4:
            raise MappingHeld("SALESPEOPLE")

    async with consuming(broker, dict.fromkeys(HANDLERS, handler), prefetch=1):
        await publish(broker, event("account", "own"))
        await publish(broker, event("contact", "dependency"))
        await wait_for(lambda: calls["own"] >= 30 and calls["dependency"] == 5, timeout=30)
        release.set()
        before = calls["own"]
        await wait_for(lambda: calls["own"] == before + 1 or calls["own"] == before, timeout=5)
        await asyncio.sleep(0.5)
    assert await drain(rabbit, topology.dead_queue) == []
    depths = await queue_depths(rabbit, [topology.mapping_queue("CUSTOMER"), topology.mapping_queue("CONTACT")])
    assert set(depths.values()) == {0}
    await broker.close()


async def test_wait_queues_are_quorum_queues_without_broker_dead_lettering(rabbit, namespace) -> None:
    """Issue 13 (5): a retry waiting in a wait queue survives a node (replicated); no TTL and no dead-letter
    exchange: RabbitMQ 3.10.8's at-least-once dead-lettering stalls after a leader loss, the workers move retries
    back themselves. Read from the broker itself."""
    topology = Topology(namespace, retry_delays=(1, 5))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    await broker.close()
    out = await _rabbitmqctl("list_queues", "-q", "--formatter", "json", "name", "type", "arguments")
    queues = {q["name"]: q for q in json.loads(out)}
    for name in topology.delay_queues:
        assert name == f"{namespace}.retry.{name.rsplit('.', 1)[-1]}", name
        arguments = dict(_pairs(queues[name]["arguments"]))
        assert queues[name]["type"] == "quorum", queues[name]
        assert arguments["x-overflow"] == "reject-publish", arguments
        assert not {"x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-strategy"} & set(arguments), arguments


def _pairs(arguments: object) -> list[tuple[str, object]]:
    """rabbitmqctl's JSON shows queue arguments as an object or as [name, type, value] triples."""
    if isinstance(arguments, dict):
        return list(arguments.items())
    return [(str(a[0]), a[-1]) for a in arguments]  # type: ignore[attr-defined]


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec("rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_ttl_delay_queues_of_earlier_releases_drain_then_go(rabbit, namespace) -> None:
    """The classic `<ns>.delay.<N>s` of an older release and the quorum TTL `<ns>.wait.<N>s` after them: deleted
    once empty, kept while they hold retries (which expire into `<ns>.retry`); the new wait queues do not clash."""
    topology = Topology(namespace, retry_delays=(1, 5))
    legacy = await rabbit.declare_queue(topology.legacy_delay_queue(5), durable=True,
                                        arguments={"x-message-ttl": 5000})
    empty = await rabbit.declare_queue(topology.legacy_delay_queue(1), durable=True,
                                       arguments={"x-message-ttl": 1000})
    await rabbit.declare_exchange(topology.retry_exchange, aio_pika.ExchangeType.HEADERS, durable=True)
    quorum_ttl = {"x-queue-type": "quorum", "x-message-ttl": 1000, "x-dead-letter-exchange": topology.retry_exchange,
                  "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    await rabbit.declare_queue(topology.legacy_wait_queue(1), durable=True, arguments=quorum_ttl)
    await rabbit.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=legacy.name)
    await asyncio.sleep(0.2)
    broker = Broker(BROKER_URL, topology)
    try:
        await broker.connect()
        assert not await _exists(topology.legacy_delay_queue(1))  # empty: deleted
        assert not await _exists(topology.legacy_wait_queue(1))
        assert await _exists(topology.legacy_delay_queue(5))  # still holds a retry: kept until it drained
        assert await _exists(topology.delay_queue(1))
    finally:
        await broker.close()
        await legacy.delete(if_empty=False)
        if await _exists(topology.legacy_wait_queue(1)):
            await rabbit.queue_delete(topology.legacy_wait_queue(1))
    del empty


async def _exists(name: str) -> bool:
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, passive=True)
        return True
    except aio_pika.exceptions.ChannelClosed:
        return False
    finally:
        await connection.close()


# ---- the retry waits (consumers/retry_waits.py) ---------------------------------------------------------------------
async def _wait_retry(broker: Broker, delay: int, mapping: object, due_in: float, record: str,
                      **headers: Any) -> float:
    """Publish a retry into the wait queue of `delay` as the worker does; its due time (epoch s)."""
    due = time.time() + due_in
    out = {**headers, DUE_HEADER: int(due * 1000)}
    if mapping is not None:
        out[MAPPING_HEADER] = mapping
    e = event("account", record)
    await broker.publish("", broker.topology.delay_queue(delay), e.model_dump_json().encode(),
                         message_id=e.dedupe_key, correlation_id=e.correlation_id, headers=out)
    return due


async def _ready(name: str) -> int:
    """Messages ready in a queue, asked afresh (a robust channel answers a passive declare from its cache)."""
    connection = await aio_pika.connect(BROKER_URL)
    try:
        return (await queue_depths(await connection.channel(), [name]))[name]
    finally:
        await connection.close()


async def _arrivals(channel: aio_pika.abc.AbstractChannel, queue_name: str, count: int, timeout: float,
                    then: float = 0.0) -> list[tuple[float, aio_pika.abc.AbstractIncomingMessage]]:
    """(time, message) of what arrives in a queue until `count` did (or `timeout`), and `then` s more."""
    queue = await channel.get_queue(queue_name, ensure=False)
    got: list[tuple[float, aio_pika.abc.AbstractIncomingMessage]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < count:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)
        else:
            got.append((time.time(), message))
    await asyncio.sleep(then)
    got += [(time.time(), m) for m in await drain(channel, queue_name)]
    return got


async def test_a_retry_waits_its_delay_then_arrives_back_at_its_mapping_queue(rabbit, namespace) -> None:
    """A retry stays in its wait queue until due, then arrives back at its mapping queue once, with the headers
    the worker set (attempts, transient waits) and without its due time."""
    topology = Topology(namespace, retry_delays=(2, 5))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    waits = RetryWaits(broker)
    await waits.start()
    try:
        kept = {ATTEMPT_HEADER: 2, ERROR_HEADER: "ValueError: no", TRANSIENT_HEADER: 3, FAILING_SINCE_HEADER: 1700000000}
        due = await _wait_retry(broker, 2, "CUSTOMER", 2.0, "later", **kept)
        got = await _arrivals(rabbit, topology.mapping_queue("CUSTOMER"), 1, timeout=10, then=1.0)
    finally:
        await waits.stop()
    assert len(got) == 1, got
    arrived, message = got[0]
    assert due <= arrived < due + 1.0, (arrived - due)
    assert ChangeEvent.model_validate_json(message.body).record_id == "later"
    assert message.headers == {MAPPING_HEADER: "CUSTOMER", **kept, "x-delivery-count": 0}  # the last: the mapping
    # queue's own count of deliveries (a quorum queue's header), which starts afresh
    assert await _ready(topology.delay_queue(2)) == 0
    await broker.close()


async def test_a_failed_event_runs_again_no_sooner_than_its_delay(rabbit, namespace) -> None:
    topology = Topology(namespace, retry_delays=(2,))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    calls: list[float] = []

    async def handler(mapping: TableMapping, e: ChangeEvent) -> None:
        calls.append(time.time())
        if len(calls) == 1:
            raise ValueError("cannot map this record yet")

    async with consuming(broker, dict.fromkeys(HANDLERS, handler), prefetch=10):
        await publish(broker, event("contact", "once"))
        await wait_for(lambda: len(calls) == 2, timeout=10)
        await asyncio.sleep(0.5)
    assert len(calls) == 2 and calls[1] - calls[0] >= 2.0 - 0.01, calls  # the clock's resolution
    await broker.close()


async def test_a_waiting_retry_whose_worker_died_is_moved_back_by_another_at_once_when_overdue(
        rabbit, namespace) -> None:
    """At least once: a worker that dies while a retry waits in it never acknowledged it; RabbitMQ delivers it
    again to another worker, which moves it back at once if it is overdue (not after a whole delay again)."""
    topology = Topology(namespace, retry_delays=(5,))
    first = Broker(BROKER_URL, topology)
    await first.connect()
    await RetryWaits(first).start()
    due = await _wait_retry(first, 5, "CUSTOMER", 1.5, "orphan")

    async def held() -> bool:  # delivered to the first worker, which holds it unacknowledged
        return await _ready(topology.delay_queue(5)) == 0

    await wait_for(held, timeout=5)
    await first.close()  # the worker is gone before the retry was due (its sleeping move with it)
    await asyncio.sleep(max(0.0, due + 1.0 - time.time()))  # now it is overdue
    assert not await held()  # back in the queue: nothing was lost with the worker
    second = Broker(BROKER_URL, topology)
    await second.connect()
    waits = RetryWaits(second)
    started = time.time()
    await waits.start()
    try:
        got = await _arrivals(rabbit, topology.mapping_queue("CUSTOMER"), 1, timeout=10, then=1.0)
    finally:
        await waits.stop()
    assert len(got) == 1, got  # once: the dead worker published nothing
    assert got[0][0] - started < 1.5, got[0][0] - started  # overdue: at once, not 5 s later
    assert got[0][1].headers == {MAPPING_HEADER: "CUSTOMER", "x-delivery-count": 0}  # not the wait queue's 1
    assert await _ready(topology.delay_queue(5)) == 0
    await second.close()


async def test_a_retry_of_an_unknown_mapping_is_dead_lettered_with_the_reason(rabbit, namespace) -> None:
    topology = Topology(namespace, retry_delays=(1,))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    waits = RetryWaits(broker)
    await waits.start()
    try:
        await _wait_retry(broker, 1, "NO-SUCH-MAPPING", 0.0, "stray", **{ATTEMPT_HEADER: 1})
        await _wait_retry(broker, 1, None, 0.0, "headless")
        dead = await _arrivals(rabbit, topology.dead_queue, 2, timeout=10, then=0.5)
    finally:
        await waits.stop()
    by_record = {ChangeEvent.model_validate_json(m.body).record_id: m for _, m in dead}
    assert set(by_record) == {"stray", "headless"}, by_record
    stray = by_record["stray"].headers
    assert "unknown mapping" in stray[ERROR_HEADER] and "NO-SUCH-MAPPING" in stray[ERROR_HEADER], stray
    assert stray[ATTEMPT_HEADER] == 1 and DUE_HEADER not in stray
    assert "unknown mapping" in by_record["headless"].headers[ERROR_HEADER]
    assert await _ready(topology.delay_queue(1)) == 0
    await broker.close()


async def test_a_retry_refused_as_unroutable_waits_until_its_mapping_queue_takes_it(rabbit, namespace) -> None:
    """RabbitMQ returns a message for a quorum queue whose leader is being elected again as unroutable (the fault
    suite's case 9 saw it 0.4 s after a node's loss), as it does for a missing queue: never a reason to
    dead-letter a retry. Played here by a mapping queue that is missing for a while."""
    topology = Topology(namespace, retry_delays=(1,))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    await rabbit.queue_delete(topology.mapping_queue("CUSTOMER"))
    waits = RetryWaits(broker)
    await waits.start()
    try:
        await _wait_retry(broker, 1, "CUSTOMER", 0.0, "unroutable")
        await asyncio.sleep(2.5)  # refused twice or thrice meanwhile
        assert await _ready(topology.delay_queue(1)) == 0  # held by the relay (it was not dropped: see below)
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            await declare(await connection.channel(), topology)  # as a worker does when it starts
        got = await _arrivals(rabbit, topology.mapping_queue("CUSTOMER"), 1, timeout=5, then=0.5)
    finally:
        await waits.stop()
    assert [ChangeEvent.model_validate_json(m.body).record_id for _, m in got] == ["unroutable"]
    assert await drain(rabbit, topology.dead_queue) == []
    await broker.close()
