"""Helpers shared by the jobs: which sides a mapping reads, events for single records, control messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from consumers.rules.base import Rule
from schemas.events import ChangeEvent
from schemas.vocabulary import SIDES, Side
from service.broker import Broker
from service.logging import get_logger
from service.store.jobs import control_exchange

log = get_logger(__name__)
KINDS = ("full-sync", "catch-up", "keeper", "poll", "reconcile")


def source_sides(rule: Rule) -> list[str]:
    """The sides whose records flow to the other side under the mapping's direction (BC first)."""
    return [side for side in SIDES if rule.creates_toward(side.other)]


def entity_of(rule: Rule, side: str) -> str:
    return rule.mapping.bc_entity if side == "bc" else rule.mapping.dataverse_entity


def record_event(rule: Rule, side: str, record_id: str, *, dedupe_key: str, correlation_id: str,
                 occurred_at: datetime | None = None) -> ChangeEvent:
    """An ordinary "updated" event of one record (a trigger: the consumer reads the record again)."""
    return ChangeEvent(
        source=Side(side).source, entity=entity_of(rule, side), record_id=record_id,
        change_type="updated", occurred_at=occurred_at or datetime.now(UTC), dedupe_key=dedupe_key[:200],
        correlation_id=correlation_id[:128], company_id=rule.ctx.bc.company_id if side == "bc" else None,
        api=rule.mapping.bc_api if side == "bc" else None)


def odata_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _exchange(broker: Broker) -> aio_pika.abc.AbstractExchange:
    assert broker.channel is not None
    return await broker.channel.declare_exchange(control_exchange(broker.topology.namespace),
                                                 aio_pika.ExchangeType.FANOUT, durable=False, auto_delete=True)


async def listen(broker: Broker, on_kind: Callable[[str], None]) -> None:
    """Bind an exclusive queue of this worker to the control exchange; `on_kind(kind)` per message."""
    exchange = await _exchange(broker)
    assert broker.channel is not None
    queue = await broker.channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange)

    async def on_message(message: AbstractIncomingMessage) -> None:
        async with message.process():
            try:
                kind = json.loads(message.body).get("kind")
            except (ValueError, AttributeError):
                return
            if kind in KINDS:
                on_kind(kind)

    await queue.consume(on_message)


async def kick(broker: Broker, kind: str) -> None:
    """Wake every worker's job of this kind (best effort: each also polls the store)."""
    try:
        exchange = await _exchange(broker)
        await exchange.publish(aio_pika.Message(json.dumps({"kind": kind}).encode()), routing_key="",
                               mandatory=False)
    except Exception as exc:
        log.warning("control message not sent", kind=kind, error=str(exc)[:200])
