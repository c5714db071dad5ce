"""`POST /admin/dead-letters/redrive` against the real api and the real RabbitMQ: dead letters of every origin go
back to their mapping's queue; those that name no known mapping are kept (at the end of the dead-letter queue,
with the reason) without stopping the ones behind them; at most the messages there at the start, and `limit`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx

from schemas.events import ChangeEvent
from service.api.admin_records import REDRIVE_SKIPPED_HEADER
from service.topology import ATTEMPT_HEADER, DELIVERY_LIMIT, ERROR_HEADER, MAPPING_HEADER, Topology
from tests.harness import ADMIN_TOKEN, drain, make_settings, running_api

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
REDRIVE = "/admin/dead-letters/redrive"


def event(entity: str, record: str) -> ChangeEvent:
    return ChangeEvent(source="dataverse", entity=entity, record_id=record, change_type="updated",
                       occurred_at=datetime.now(UTC), dedupe_key=f"k-{record}", correlation_id=f"c-{record}")


async def dead_letter(rabbit: aio_pika.abc.AbstractChannel, topology: Topology, record: str,
                      headers: dict[str, Any], routing_key: str = "dataverse.contact") -> None:
    """Put a message straight into `<ns>.dead-letters` through the dead exchange, with the given headers."""
    exchange = await rabbit.get_exchange(topology.dead_exchange)
    await exchange.publish(aio_pika.Message(event("contact", record).model_dump_json().encode(), message_id=f"k-{record}",
                                            correlation_id=f"c-{record}", headers=headers,
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key)


def x_death(queue: str, reason: str = "delivery_limit") -> dict[str, Any]:
    """Dead-lettering headers shaped like RabbitMQ's (3.10: `x-death` and `x-first-death-*`)."""
    return {"x-death": [{"count": 1, "reason": reason, "queue": queue, "time": datetime.now(UTC).replace(microsecond=0),
                         "exchange": queue.split(".mapping.")[0] + ".events", "routing-keys": ["dataverse.contact"]}],
            "x-first-death-queue": queue, "x-first-death-reason": reason,
            "x-first-death-exchange": queue.split(".mapping.")[0] + ".events"}


async def depth(rabbit: aio_pika.abc.AbstractChannel, name: str) -> int:
    """Messages ready in a queue, asked afresh (a robust channel answers a repeated passive declare from its cache)."""
    queue = await rabbit.get_queue(name)
    return (await queue.declare()).message_count or 0


def record(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    return ChangeEvent.model_validate_json(message.body).record_id


async def redrive(http: httpx.AsyncClient, **params: int) -> dict[str, Any]:
    response = await http.post(REDRIVE, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_message_dead_lettered_by_the_delivery_limit_goes_back_to_its_mapping_queue(
        rabbit, namespace, sqlite_url) -> None:
    topology = Topology(namespace)
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        broker = app.state.broker
        # As the relay publishes it: to the events exchange, no header of ours.
        crashing = event("contact", "crashes-the-worker")
        await broker.publish(topology.events_exchange, crashing.routing_key, crashing.model_dump_json().encode(),
                             message_id=crashing.dedupe_key, correlation_id=crashing.correlation_id)
        # A worker that dies on it, again and again: the quorum queue gives up after its delivery limit.
        contact = await rabbit.get_queue(topology.mapping_queue("CONTACT"))
        returns = 0
        while (message := await contact.get(no_ack=False, fail=False)) is not None:
            await message.nack(requeue=True)
            returns += 1
        assert returns == DELIVERY_LIMIT + 1
        # And one the worker dead-lettered itself (retry budget spent): its header names the mapping.
        await dead_letter(rabbit, topology, "budget-spent", {MAPPING_HEADER: "CUSTOMER", ATTEMPT_HEADER: 5,
                                                              ERROR_HEADER: "ValueError: bad"}, routing_key="CUSTOMER")
        dead = await rabbit.declare_queue(topology.dead_queue, passive=True)
        first = await dead.get(no_ack=False)
        assert MAPPING_HEADER not in first.headers and first.headers["x-death"][0]["reason"] == "delivery_limit"
        await first.reject(requeue=True)  # (only the test looks; the re-drive never does this)

        assert await redrive(http) == {"redriven": 2, "kept": 0, "kept_reasons": {}}
        contacts = await drain(rabbit, topology.mapping_queue("CONTACT"))
        customers = await drain(rabbit, topology.mapping_queue("CUSTOMER"))
    assert [record(m) for m in contacts] == ["crashes-the-worker"]
    assert [record(m) for m in customers] == ["budget-spent"]
    for message, mapping in ((contacts[0], "CONTACT"), (customers[0], "CUSTOMER")):
        assert message.headers[MAPPING_HEADER] == mapping and message.headers[ATTEMPT_HEADER] == 0  # afresh
        assert ERROR_HEADER not in message.headers and not [h for h in message.headers if h.startswith("x-death")]
    assert contacts[0].message_id == crashing.dedupe_key and contacts[0].correlation_id == crashing.correlation_id
    left = await drain(rabbit, topology.dead_queue)
    assert not left, [(record(m), m.headers, m.routing_key) for m in left]


async def test_unplaceable_dead_letters_are_kept_with_the_reason_and_do_not_stop_the_ones_behind(
        rabbit, namespace, sqlite_url) -> None:
    topology = Topology(namespace)
    async with running_api(make_settings(sqlite_url, namespace)) as (base, _), httpx.AsyncClient(base_url=base) as http:
        await dead_letter(rabbit, topology, "gone", x_death(topology.mapping_queue("RETIRED-MAPPING")))
        await dead_letter(rabbit, topology, "nameless", {})
        await dead_letter(rabbit, topology, "limit", x_death(topology.mapping_queue("CONTACT")))
        # RabbitMQ 3.13+/4 also sets `x-last-death-*`; an `x-death` may be absent (another protocol's consumer).
        await dead_letter(rabbit, topology, "last-death", {"x-last-death-queue": topology.mapping_queue("CUSTOMER"),
                                                           "x-last-death-reason": "delivery_limit"})
        await dead_letter(rabbit, topology, "renamed", {MAPPING_HEADER: "NO-SUCH-MAPPING"})

        assert await redrive(http) == {"redriven": 2, "kept": 3,
                                       "kept_reasons": {"unknown_mapping": 2, "no_mapping": 1}}
        assert [record(m) for m in await drain(rabbit, topology.mapping_queue("CONTACT"))] == ["limit"]
        assert [record(m) for m in await drain(rabbit, topology.mapping_queue("CUSTOMER"))] == ["last-death"]

        # Each call looks at what is there when it starts: the kept ones once each, none lost, none rejected.
        assert await redrive(http) == {"redriven": 0, "kept": 3,
                                       "kept_reasons": {"unknown_mapping": 2, "no_mapping": 1}}
        kept = await drain(rabbit, topology.dead_queue)
    assert [record(m) for m in kept] == ["gone", "nameless", "renamed"]  # in their order, nothing else
    by_record = {record(m): m for m in kept}
    assert by_record["gone"].headers[REDRIVE_SKIPPED_HEADER] == "unknown_mapping: RETIRED-MAPPING"
    assert by_record["gone"].headers["x-death"][0]["queue"] == topology.mapping_queue("RETIRED-MAPPING")  # kept as is
    assert by_record["nameless"].headers[REDRIVE_SKIPPED_HEADER] == "no_mapping"
    assert by_record["renamed"].headers[REDRIVE_SKIPPED_HEADER] == "unknown_mapping: NO-SUCH-MAPPING"
    assert by_record["renamed"].message_id == "k-renamed" and by_record["renamed"].correlation_id == "c-renamed"
    assert not any(m.redelivered for m in kept)  # published again, never returned to the queue


async def test_at_most_limit_dead_letters_per_call_in_order(rabbit, namespace, sqlite_url) -> None:
    topology = Topology(namespace)
    async with running_api(make_settings(sqlite_url, namespace)) as (base, _), httpx.AsyncClient(base_url=base) as http:
        for n in range(5):
            await dead_letter(rabbit, topology, f"r{n}", x_death(topology.mapping_queue("CONTACT")))
        assert await redrive(http, limit=2) == {"redriven": 2, "kept": 0, "kept_reasons": {}}
        assert [record(m) for m in await drain(rabbit, topology.mapping_queue("CONTACT"))] == ["r0", "r1"]
        assert await depth(rabbit, topology.dead_queue) == 3
        assert await redrive(http) == {"redriven": 3, "kept": 0, "kept_reasons": {}}
        assert [record(m) for m in await drain(rabbit, topology.mapping_queue("CONTACT"))] == ["r2", "r3", "r4"]
        assert await redrive(http) == {"redriven": 0, "kept": 0, "kept_reasons": {}}
        assert (await http.post(REDRIVE, params={"limit": 0}, headers=AUTH)).status_code == 400


async def test_a_move_rabbitmq_does_not_confirm_leaves_the_dead_letter_where_it_was(
        rabbit, namespace, sqlite_url, monkeypatch) -> None:
    topology = Topology(namespace)
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        for n in range(2):
            await dead_letter(rabbit, topology, f"r{n}", x_death(topology.mapping_queue("CONTACT")))
        broker = app.state.broker
        publish = broker.publish

        moves = 0

        async def second_move_unconfirmed(*args: Any, **kwargs: Any) -> None:
            nonlocal moves
            moves += 1
            if moves == 2:
                raise TimeoutError("no confirm")
            await publish(*args, **kwargs)

        monkeypatch.setattr(broker, "publish", second_move_unconfirmed)
        response = await http.post(REDRIVE, headers=AUTH)
        assert response.status_code == 503 and "re-driven 1 and kept 0" in response.json()["detail"]
        monkeypatch.setattr(broker, "publish", publish)
        assert [record(m) for m in await drain(rabbit, topology.mapping_queue("CONTACT"))] == ["r0"]
        assert await redrive(http) == {"redriven": 1, "kept": 0, "kept_reasons": {}}  # r1 was still there
        assert [record(m) for m in await drain(rabbit, topology.mapping_queue("CONTACT"))] == ["r1"]
