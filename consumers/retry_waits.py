"""Retries wait in the quorum queues `<ns>.retry.<N>s`; every worker moves them back to their mapping queue when due.

Not the broker's TTL dead-lettering: on RabbitMQ 3.10.8 a quorum queue's at-least-once dead-lettering stalls for
good once the queue's leader is lost (docs/reliability.md, findings), and a classic queue lives on one node. Here
the wait queues are plain replicated queues and the move back is ordinary consuming and publishing:

- The worker puts the due time on each retry (`DUE_HEADER`, epoch ms). A queue has one fixed delay, so its
  messages are in due order: a consumer receives them in that order and holds at most `PREFETCH` at a time.
- A delivery sleeps until due, is published to its mapping queue with the broker's confirm, and only then
  acknowledged. A worker that dies or stops meanwhile leaves it unacknowledged: RabbitMQ gives it to another
  worker (or this one, reconnected), which finds it overdue and moves it at once. At least once, then: a copy
  may reach the mapping queue twice, which is harmless (an event is only a trigger to read the record again).
- A retry whose mapping is unknown goes to the dead-letter exchange with the reason, never nowhere.

The longest delay stays far below RabbitMQ's consumer_timeout (settings: at most 1200 s of the default 1800 s),
so the broker never closes a channel for a message that is only waiting (RabbitMQ's "Consumers" guide, "Delivery
Acknowledgement Timeout": https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout). The stall: upstream
rabbitmq-server#7677 ("Improve rabbit_fifo_dlx_worker resiliency"), after 3.10.8.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from service.broker import Broker
from service.logging import get_logger
from service.metrics import DEAD_LETTERS
from service.topology import DUE_HEADER, ERROR_HEADER, MAPPING_HEADER, WAIT_ARGUMENTS

log = get_logger(__name__)

PREFETCH = 100  # per wait queue and worker: messages held while they wait; more are delivered as these go
PUBLISH_PAUSE = 1.0  # between attempts to publish while the broker refuses
STOP_GRACE = 5.0  # how long `stop` lets moves already publishing finish


class RetryWaits:
    def __init__(self, broker: Broker, prefetch: int = PREFETCH) -> None:
        self.broker = broker
        self.prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._moving: set[asyncio.Task[Any]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Consume every wait queue on a channel of its own: its prefetch is not the mapping consumers', and the
        robust connection restores its qos and consumers after a reconnect (the broker must be connected)."""
        assert self.broker.connection is not None
        self._stopping = False
        self._channel = await self.broker.connection.channel()
        await self._channel.set_qos(prefetch_count=self.prefetch)
        topology = self.broker.topology
        for seconds in topology.retry_delays:
            queue = await self._channel.declare_queue(topology.delay_queue(seconds), durable=True,
                                                      arguments=WAIT_ARGUMENTS)
            await queue.consume(functools.partial(self._relay, seconds))
        log.info("retry waits consuming", queues=len(topology.retry_delays), prefetch=self.prefetch)

    async def stop(self) -> None:
        """Let moves that are publishing finish, then close the channel: what it still holds (waiting, not yet
        acknowledged) goes back to the queues, and whichever worker gets it next moves it when due."""
        self._stopping = True
        if self._moving:
            await asyncio.wait(set(self._moving), timeout=STOP_GRACE)
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                await asyncio.wait_for(channel.close(), STOP_GRACE)
            except Exception as exc:  # the connection is going anyway: RabbitMQ requeues what the channel held
                log.warning("retry waits channel not closed cleanly", error=str(exc)[:200])

    async def _relay(self, delay: int, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers)
        headers.pop("x-delivery-count", None)  # the wait queue's count; the mapping queue keeps its own
        due = _int(headers.pop(DUE_HEADER, None)) / 1000  # none (not ours): due at once
        # Never longer than the queue's delay: a clock ahead of this one must not keep a message unacknowledged
        # for longer than the delay that consumer_timeout was checked against.
        wait = min(due - time.time(), float(delay))
        if wait > 0:
            await asyncio.sleep(wait)  # losing the channel cancels this: the message goes back to the queue
        if self._stopping:
            return  # unacknowledged: back to the queue when `stop` closes the channel
        task = asyncio.current_task()
        assert task is not None
        self._moving.add(task)
        try:
            await self._move(message, headers, overdue=max(0.0, -wait) if message.redelivered else 0.0)
        finally:
            self._moving.discard(task)

    async def _move(self, message: AbstractIncomingMessage, headers: dict[str, Any], overdue: float) -> None:
        topology = self.broker.topology
        mapping = headers.get(MAPPING_HEADER)
        mapping = mapping.decode(errors="replace") if isinstance(mapping, bytes) else mapping
        if isinstance(mapping, str) and mapping in self.broker.queues:
            exchange, key = "", topology.mapping_queue(mapping)
        else:
            exchange, key = topology.dead_exchange, "unknown"
            headers[ERROR_HEADER] = f"retry of an unknown mapping ({MAPPING_HEADER}: {mapping!r})"
        while True:
            if self._stopping or not still_ours(message):
                return  # unacknowledged: RabbitMQ delivers it again, and its next consumer moves it
            try:
                await self.broker.publish(exchange, key, message.body, message_id=message.message_id or "",
                                          correlation_id=message.correlation_id or "", headers=headers)
                break
            except Exception as exc:
                # The broker away or refusing: still ours, so try again. Unroutable too: RabbitMQ returns a message
                # for a quorum queue whose leader is being elected again after a node loss as it would for a
                # missing queue (a mapping queue deleted by hand: its retries wait here until it is declared again).
                log.warning("retry could not be moved back yet", queue=key, error=f"{type(exc).__name__}: {exc}"[:200],
                            retry_in=PUBLISH_PAUSE)
                await asyncio.sleep(PUBLISH_PAUSE)
        if exchange:
            log.error("event dead-lettered", error=headers[ERROR_HEADER], correlation_id=message.correlation_id)
            DEAD_LETTERS.labels(key).inc()
        elif overdue:
            log.info("retry delivered again; moved back at once", mapping=mapping, overdue_seconds=round(overdue, 1),
                     correlation_id=message.correlation_id)
        try:
            await message.ack()
        except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, ConnectionError):
            # Published, but the channel went before the ack: it comes back and is moved once more (a duplicate
            # trigger, harmless).
            log.info("retry moved back; its acknowledgement was lost with the channel", mapping=mapping)


def still_ours(message: AbstractIncomingMessage) -> bool:
    """Is the channel it came on still open (can it still be acknowledged)?"""
    try:
        return not message.channel.is_closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return False


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
