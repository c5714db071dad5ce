"""The worker against the real RabbitMQ: ack on success, retry through the delay queues, dead letters."""

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime

import aio_pika

from consumers.errors import MappingHeld
from consumers.handlers import HANDLERS
from consumers.worker import Worker
from schemas.events import ChangeEvent
from schemas.mappings import MAPPINGS, TableMapping
from service.broker import Broker
from service.connectors.http import ApiError
from service.metrics import DEAD_LETTERS
from service.topology import ATTEMPT_HEADER, ERROR_HEADER, MAPPING_HEADER, Topology
from tests.conftest import BROKER_URL
from tests.harness import drain, queue_depths, wait_for


def event(entity: str, record: str) -> ChangeEvent:
    return ChangeEvent(source="dataverse", entity=entity, record_id=record, change_type="updated",
                       occurred_at=datetime.now(UTC), dedupe_key=f"k-{record}", correlation_id=f"c-{record}")


async def publish(broker: Broker, e: ChangeEvent) -> None:
    await broker.publish(broker.topology.events_exchange, e.routing_key, e.model_dump_json().encode(),
                         message_id=e.dedupe_key, correlation_id=e.correlation_id)


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

    worker = Worker(broker, prefetch=10, handlers=dict.fromkeys(HANDLERS, handler))
    await worker.start()
    dead_before = DEAD_LETTERS.labels("CONTACT")._value.get()
    try:
        await publish(broker, event("account", "fine"))
        await publish(broker, event("account", "flaky"))
        await publish(broker, event("contact", "broken"))
        await broker.publish("", topology.mapping_queue("CUSTOMER"), b"not an event", message_id="x",
                             correlation_id="x")
        await wait_for(lambda: calls["flaky"] == 3 and calls["broken"] == 3, timeout=20)
        await wait_for(lambda: DEAD_LETTERS.labels("CONTACT")._value.get() == dead_before + 1)
    finally:
        await worker.stop()
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

    worker = Worker(broker, prefetch=10, handlers=dict.fromkeys(HANDLERS, handler))
    await worker.start()
    try:
        await publish(broker, event("account", "down"))
        await publish(broker, event("contact", "throttled"))
        await wait_for(lambda: calls["down"] == 6 and calls["throttled"] == 5, timeout=30)
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
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

    worker = Worker(broker, prefetch=10, handlers=dict.fromkeys(HANDLERS, handler), transient_hours=2.5 / 3600)
    await worker.start()
    try:
        await publish(broker, event("account", "gone-for-good"))
        dead = await _wait_dead(rabbit, topology, timeout=20)
    finally:
        await worker.stop()
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

    worker = Worker(broker, prefetch=1, handlers=dict.fromkeys(HANDLERS, handler))
    await worker.start()
    try:
        await publish(broker, event("account", "own"))
        await publish(broker, event("contact", "dependency"))
        await wait_for(lambda: calls["own"] >= 30 and calls["dependency"] == 5, timeout=30)
        release.set()
        before = calls["own"]
        await wait_for(lambda: calls["own"] == before + 1 or calls["own"] == before, timeout=5)
        await asyncio.sleep(0.5)
    finally:
        await worker.stop()
    assert await drain(rabbit, topology.dead_queue) == []
    depths = await queue_depths(rabbit, [topology.mapping_queue("CUSTOMER"), topology.mapping_queue("CONTACT")])
    assert set(depths.values()) == {0}
    await broker.close()


async def test_delay_queues_are_quorum_queues_that_dead_letter_at_least_once(rabbit, namespace) -> None:
    """Issue 13 (5): a retry waiting in a delay queue survives a node (replicated) and its move back (at-least-
    once dead-lettering). Read from the broker itself."""
    topology = Topology(namespace, retry_delays=(1, 5))
    broker = Broker(BROKER_URL, topology)
    await broker.connect()
    await broker.close()
    out = await _rabbitmqctl("list_queues", "-q", "--formatter", "json", "name", "type", "arguments")
    queues = {q["name"]: q for q in json.loads(out)}
    for name in topology.delay_queues:
        arguments = dict(_pairs(queues[name]["arguments"]))
        assert queues[name]["type"] == "quorum", queues[name]
        assert arguments["x-dead-letter-strategy"] == "at-least-once", arguments
        assert arguments["x-overflow"] == "reject-publish", arguments
        assert arguments["x-dead-letter-exchange"] == topology.retry_exchange


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


async def test_classic_delay_queues_of_an_earlier_release_drain_then_go(rabbit, namespace) -> None:
    topology = Topology(namespace, retry_delays=(1, 5))
    legacy = await rabbit.declare_queue(topology.legacy_delay_queue(5), durable=True,
                                        arguments={"x-message-ttl": 5000})
    empty = await rabbit.declare_queue(topology.legacy_delay_queue(1), durable=True,
                                       arguments={"x-message-ttl": 1000})
    await rabbit.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=legacy.name)
    await asyncio.sleep(0.2)
    broker = Broker(BROKER_URL, topology)
    try:
        await broker.connect()
        assert not await _exists(topology.legacy_delay_queue(1))  # empty: deleted
        assert await _exists(topology.legacy_delay_queue(5))  # still holds a retry: kept until it drained
    finally:
        await broker.close()
        await legacy.delete(if_empty=False)
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
