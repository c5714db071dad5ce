"""RabbitMQ names and their idempotent declaration, all under BCSYNC_NAMESPACE.

- `<ns>.events` (topic): change events, routing key `<source>.<entity>`.
- `<ns>.mapping.<NAME>` (quorum): one per table mapping, bound to the routing keys of its tables, so a
  mapping can be held (its consumer stops, its events wait) independently of the others.
- `<ns>.wait.<N>s` (quorum, TTL N s): retry with back-off; expired messages dead-letter into `<ns>.retry`
  (headers exchange), which routes them back by their `bcsync-mapping` header. Replicated like the mapping
  queues, and dead-lettering *at least once* (`x-dead-letter-strategy`, which needs `x-overflow:
  reject-publish`): the queue keeps a message until the mapping queue confirmed it, so neither a node lost
  while an event waits nor one lost while it moves back drops the event (RabbitMQ docs, "Quorum Queues" /
  "At-least-once dead-lettering", 3.10+; message TTL on quorum queues, 3.10+). Installations from before
  used classic `<ns>.delay.<N>s` queues (single node, at-most-once): they are left to drain (their messages
  still expire into `<ns>.retry`) and deleted once empty.
- `<ns>.dead` (fanout) → `<ns>.dead-letters` (quorum): events past their retry budget, and messages a
  quorum queue gave up on after `DELIVERY_LIMIT` redeliveries (a worker crashing on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from schemas.mappings import MAPPINGS

MAPPING_HEADER = "bcsync-mapping"
ATTEMPT_HEADER = "bcsync-attempt"
ERROR_HEADER = "bcsync-error"
TRANSIENT_HEADER = "bcsync-transient-waits"  # transient failures so far (they do not spend the retry budget)
FAILING_SINCE_HEADER = "bcsync-failing-since"  # epoch seconds of the first transient failure
DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class Topology:
    namespace: str
    retry_delays: tuple[int, ...] = (1, 5, 30, 120, 600)

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def retry_exchange(self) -> str:
        return f"{self.namespace}.retry"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.namespace}.dead-letters"

    def mapping_queue(self, mapping: str) -> str:
        return f"{self.namespace}.mapping.{mapping}"

    def delay_queue(self, seconds: int) -> str:
        return f"{self.namespace}.wait.{seconds}s"

    def legacy_delay_queue(self, seconds: int) -> str:
        """The classic delay queues of earlier releases (drained, then deleted)."""
        return f"{self.namespace}.delay.{seconds}s"

    @property
    def delay_queues(self) -> list[str]:
        return [self.delay_queue(seconds) for seconds in self.retry_delays]

    def delay_for_attempt(self, attempt: int) -> int | None:
        """Delay before retry number `attempt` (1-based); None when the retry budget is spent."""
        return self.retry_delays[attempt - 1] if attempt <= len(self.retry_delays) else None


def delay_arguments(topology: Topology, seconds: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": seconds * 1000,
        "x-dead-letter-exchange": topology.retry_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # required by at-least-once dead-lettering
    }


async def drop_legacy_delay_queues(connection: AbstractConnection, topology: Topology) -> list[str]:
    """Delete the classic delay queues of an earlier release once they are empty; the names still waiting.
    Each check runs on a channel of its own: a passive declare of a missing queue closes its channel."""
    waiting: list[str] = []
    for seconds in topology.retry_delays:
        name = topology.legacy_delay_queue(seconds)
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            continue  # not there (the usual case)
        try:
            if queue.declaration_result.message_count:
                waiting.append(name)  # its messages expire into the retry exchange within `seconds`
            else:
                await queue.delete(if_unused=False, if_empty=True)
        finally:
            if not channel.is_closed:
                await channel.close()
    return waiting


async def declare(channel: AbstractChannel, topology: Topology) -> dict[str, AbstractQueue]:
    """Declare every exchange and queue (idempotent); returns the mapping queues by mapping name."""
    events = await channel.declare_exchange(topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    retry = await channel.declare_exchange(topology.retry_exchange, aio_pika.ExchangeType.HEADERS, durable=True)
    dead = await channel.declare_exchange(topology.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    dead_queue = await channel.declare_queue(
        topology.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead)
    for seconds in topology.retry_delays:
        await channel.declare_queue(topology.delay_queue(seconds), durable=True,
                                    arguments=delay_arguments(topology, seconds))
    queues: dict[str, AbstractQueue] = {}
    for mapping in MAPPINGS:
        queue = await channel.declare_queue(
            topology.mapping_queue(mapping.name), durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": topology.dead_exchange,
                "x-delivery-limit": DELIVERY_LIMIT,
            },
        )
        for key in mapping.routing_keys:
            await queue.bind(events, routing_key=key)
        await queue.bind(retry, arguments={"x-match": "all", MAPPING_HEADER: mapping.name})
        queues[mapping.name] = queue
    return queues
