"""RabbitMQ names and their idempotent declaration, all under BCSYNC_NAMESPACE.

- `<ns>.events` (topic): change events, routing key `<source>.<entity>`.
- `<ns>.mapping.<NAME>` (quorum): one per table mapping, bound to the routing keys of its tables, so a
  mapping can be held (its consumer stops, its events wait) independently of the others.
- `<ns>.retry.<N>s` (quorum, no TTL, no dead-lettering): retries waiting N s. The worker publishes a failed
  event there with its due time (`bcsync-due-at`, epoch ms); every worker consumes these queues and, when a
  message is due, publishes it back to its mapping queue (by its `bcsync-mapping` header) and only then
  acknowledges it (consumers/retry_waits.py). One fixed delay per queue keeps a queue in due order.
  Replicated like the mapping queues, so a retry survives the loss of a node; the move back is the worker's,
  not the broker's, because RabbitMQ 3.10.8's at-least-once dead-lettering of a quorum queue stalls for good
  once the queue's leader is lost (docs/reliability.md, findings), and a classic queue lives on one node.
- `<ns>.retry` (headers): routes by the `bcsync-mapping` header to the mapping queues. Only the wait queues of
  earlier releases dead-letter into it (below); kept so that they drain.
- `<ns>.dead` (fanout) → `<ns>.dead-letters` (quorum): events past their retry budget, retries whose mapping
  is unknown, and messages a quorum queue gave up on after `DELIVERY_LIMIT` redeliveries (a worker crashing on
  them).

Earlier releases waited with broker TTLs: classic `<ns>.delay.<N>s` queues (one node, at-most-once), then
quorum `<ns>.wait.<N>s` queues (at-least-once dead-lettering). Both expire into `<ns>.retry`: they are left to
drain and deleted once empty (`drop_legacy_delay_queues`). The new name keeps the declaration of the new
queues from clashing with theirs (a redeclare with other arguments is refused).
"""

from __future__ import annotations

import contextlib
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
DUE_HEADER = "bcsync-due-at"  # epoch milliseconds when a retry in a wait queue goes back to its mapping queue
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
        """The wait queue of retries delayed `seconds` (consumers/retry_waits.py moves them back)."""
        return f"{self.namespace}.retry.{seconds}s"

    def legacy_delay_queue(self, seconds: int) -> str:
        """The classic TTL delay queues of earlier releases (drained, then deleted)."""
        return f"{self.namespace}.delay.{seconds}s"

    def legacy_wait_queue(self, seconds: int) -> str:
        """The quorum TTL wait queues (at-least-once dead-lettering) that came after them (drained, then deleted)."""
        return f"{self.namespace}.wait.{seconds}s"

    @property
    def delay_queues(self) -> list[str]:
        return [self.delay_queue(seconds) for seconds in self.retry_delays]

    def delay_for_attempt(self, attempt: int) -> int | None:
        """Delay before retry number `attempt` (1-based); None when the retry budget is spent."""
        return self.retry_delays[attempt - 1] if attempt <= len(self.retry_delays) else None


# No TTL and no dead-letter exchange: the worker moves a message back when it is due. `reject-publish`: a
# queue at a length limit (none is set; a policy may add one) refuses new retries, and the publisher's confirm
# fails, so the retry is not acknowledged and comes back, rather than the head being dropped unseen.
WAIT_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum", "x-overflow": "reject-publish"}


async def drop_legacy_delay_queues(connection: AbstractConnection, topology: Topology) -> list[str]:
    """Delete the TTL delay queues of earlier releases (`<ns>.delay.<N>s`, `<ns>.wait.<N>s`) once they are empty;
    the names still waiting. Each check runs on a channel of its own: a passive declare of a missing queue
    closes its channel. The classic ones are deleted `if_empty` (atomic). Quorum queues refuse that flag (with a
    connection error), so for `<ns>.wait.<N>s` the check and the delete are two steps: safe once no worker of
    that version publishes into them. Their count leaves out messages stuck dead-lettered-but-unconfirmed by the
    3.10.8 stall (`messages_dlx` in `rabbitmqctl list_queues`), which go with the queue."""
    waiting: list[str] = []
    names = [(topology.legacy_delay_queue(s), True) for s in topology.retry_delays]
    names += [(topology.legacy_wait_queue(s), False) for s in topology.retry_delays]
    for name, classic in names:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            declared = queue.declaration_result
            if declared.message_count or (not classic and declared.consumer_count):
                waiting.append(name)  # its messages expire into the retry exchange within `seconds`
            else:
                await queue.delete(if_unused=False, if_empty=classic)
        except aio_pika.exceptions.ChannelClosed:
            pass  # not there (the usual case)
        finally:
            # Also when the broker closed it: a robust channel reopens itself, and would stay open (and be
            # restored after every reconnect) unless closed here.
            with contextlib.suppress(Exception):
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
        await channel.declare_queue(topology.delay_queue(seconds), durable=True, arguments=WAIT_ARGUMENTS)
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
