"""RabbitMQ names and their idempotent declaration, all under BCSYNC_NAMESPACE.

- `<ns>.events` (topic): change events, routing key `<source>.<entity>`.
- `<ns>.mapping.<NAME>` (quorum): one per table mapping, bound to the routing keys of its tables, so a
  mapping can be held (its consumer stops, its events wait) independently of the others.
- `<ns>.delay.<N>s` (classic, TTL N s): retry with back-off; expired messages dead-letter into
  `<ns>.retry` (headers exchange), which routes them back by their `bcsync-mapping` header.
- `<ns>.dead` (fanout) → `<ns>.dead-letters` (quorum): events past their retry budget, and messages a
  quorum queue gave up on after `DELIVERY_LIMIT` redeliveries (a worker crashing on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from schemas.mappings import MAPPINGS

MAPPING_HEADER = "bcsync-mapping"
ATTEMPT_HEADER = "bcsync-attempt"
ERROR_HEADER = "bcsync-error"
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
        return f"{self.namespace}.delay.{seconds}s"

    def delay_for_attempt(self, attempt: int) -> int | None:
        """Delay before retry number `attempt` (1-based); None when the retry budget is spent."""
        return self.retry_delays[attempt - 1] if attempt <= len(self.retry_delays) else None


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
        await channel.declare_queue(
            topology.delay_queue(seconds), durable=True,
            arguments={"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": topology.retry_exchange},
        )
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
