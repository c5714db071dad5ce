"""The worker against the real RabbitMQ: ack on success, retry through the delay queues, dead letters."""

import asyncio
from collections import Counter
from datetime import UTC, datetime

from consumers.handlers import HANDLERS
from consumers.worker import Worker
from schemas.events import ChangeEvent
from schemas.mappings import MAPPINGS, TableMapping
from service.broker import Broker
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
