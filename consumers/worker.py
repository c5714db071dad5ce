"""`bcsync worker`: consume every mapping queue, apply each event, retry with back-off, dead-letter.

A message is acknowledged only after its handler succeeded, or after it was re-published to a wait
queue (retry) or to the dead-letter exchange (retry budget spent): a crash at any point redelivers it,
never loses it. Every worker also moves the retries of every worker back to their mapping queues when they
are due (consumers/retry_waits.py), and runs an outbox relay, so events accepted by an api replica that
died before relaying them are published anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy.exc
import structlog
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from consumers.errors import MappingHeld, RecordBusy
from consumers.handlers import HANDLERS, Handler
from consumers.retry_waits import RetryWaits, still_ours
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME, TableMapping
from service.broker import Broker
from service.connectors.http import is_transient
from service.logging import get_logger
from service.metrics import DEAD_LETTERS
from service.relay import OutboxRelay
from service.topology import (
    ATTEMPT_HEADER,
    DUE_HEADER,
    ERROR_HEADER,
    FAILING_SINCE_HEADER,
    MAPPING_HEADER,
    TRANSIENT_HEADER,
)

log = get_logger(__name__)

PASS_ON_ATTEMPTS, PASS_ON_PAUSE = 5, 1.0  # publishing a retry, dead letter or held event in a message's place


class Worker:
    def __init__(self, broker: Broker, prefetch: int, handlers: dict[str, Handler] | None = None, *,
                 handler_timeout: float = 600.0, transient_hours: float = 24.0) -> None:
        self.broker = broker
        self.prefetch = prefetch
        self.handler_timeout = handler_timeout
        self.transient_limit = transient_hours * 3600
        self.handlers = handlers if handlers is not None else HANDLERS
        self._consumer_tags: dict[str, str] = {}
        self.held: set[str] = set()

    async def start(self) -> None:
        """Consume every mapping queue that is not on hold (the broker must be connected)."""
        assert self.broker.channel is not None
        await self.broker.channel.set_qos(prefetch_count=self.prefetch)
        for name, queue in self.broker.queues.items():
            if name not in self.held:
                self._consumer_tags[name] = await queue.consume(self._callback(BY_NAME[name]))
        log.info("worker consuming", queues=len(self._consumer_tags), prefetch=self.prefetch)

    async def apply_holds(self, held: set[str]) -> None:
        """Stop consuming held mappings (their events wait in the queue) and start again on resume."""
        for name in sorted(held - self.held):
            tag = self._consumer_tags.pop(name, None)
            if tag is not None:
                await self.broker.queues[name].cancel(tag)
            log.info("mapping on hold: not consuming", mapping=name)
        for name in sorted(self.held - held):
            if name in self.broker.queues and name not in self._consumer_tags:
                self._consumer_tags[name] = await self.broker.queues[name].consume(self._callback(BY_NAME[name]))
            log.info("mapping resumed: consuming", mapping=name)
        self.held = set(held)

    async def stop(self) -> None:
        for name, tag in self._consumer_tags.items():
            try:
                await self.broker.queues[name].cancel(tag)
            except Exception:
                log.warning("could not cancel consumer", mapping=name)
        self._consumer_tags.clear()

    def _callback(self, mapping: TableMapping) -> Any:
        async def on_message(message: AbstractIncomingMessage) -> None:
            await self.process(mapping, message)

        return on_message

    async def process(self, mapping: TableMapping, message: AbstractIncomingMessage) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=message.correlation_id, mapping=mapping.name)
        if mapping.name in self.held:  # delivered just before the consumer was cancelled: back to the queue
            await self._back_to_queue(mapping, message)
            return
        try:
            event = ChangeEvent.model_validate_json(message.body)
        except ValidationError as exc:
            await self._dead_letter(mapping, message, f"not a ChangeEvent: {exc.errors()[0]['msg']}", attempt=0)
            return
        log.info("change event received", source=event.source, entity=event.entity, record_id=event.record_id,
                 change_type=event.change_type, dedupe_key=event.dedupe_key)
        try:
            await asyncio.wait_for(self.handlers[mapping.name](mapping, event), self.handler_timeout)
        except asyncio.CancelledError:
            raise
        except MappingHeld as held:
            if held.mapping == mapping.name:  # held after it was delivered: it waits with the others
                await self._back_to_queue(mapping, message)
            else:  # a record it depends on belongs to a held mapping: wait, without spending retries
                await self._retry(mapping, message, held)
            return
        except Exception as exc:
            await self._retry(mapping, message, exc)
            return
        await message.ack()

    async def _back_to_queue(self, mapping: TableMapping, message: AbstractIncomingMessage) -> None:
        """Put a message of a held mapping at the back of its queue. Published again rather than nacked: a
        quorum queue counts every requeue toward its delivery limit, and the hold may last long."""
        await self._pass_on(message, "", self.broker.topology.mapping_queue(mapping.name), dict(message.headers))

    async def _retry(self, mapping: TableMapping, message: AbstractIncomingMessage, error: Exception) -> None:
        """Send the message round a wait queue. Three kinds of failure:
        - busy (another run holds the record): the shortest delay, nothing counted;
        - transient (no answer, 408, 429, 5xx, the store or a held dependency away): it says nothing about the
          record, so it does not spend the retry budget; it waits the delays in turn, then the longest one
          again and again, for up to `transient_retry_hours` since its first failure;
        - any other: one attempt of the budget; dead-lettered when the budget is spent."""
        headers = message.headers
        attempt = _int(headers.get(ATTEMPT_HEADER))
        delays = self.broker.topology.retry_delays
        out: dict[str, Any] = {MAPPING_HEADER: mapping.name, ATTEMPT_HEADER: attempt}
        if isinstance(error, RecordBusy):
            delay = delays[0]
            log.info("record busy; requeued", retry_in=delay, busy=str(error)[:200])
            await self._wait(message, delay, out)
            return
        reason = f"{type(error).__name__}: {error}"[:500]
        out[ERROR_HEADER] = reason
        if transient_failure(error):
            waits = _int(headers.get(TRANSIENT_HEADER)) + 1
            since = _int(headers.get(FAILING_SINCE_HEADER)) or int(time.time())  # whole seconds: AMQP has ints
            if time.time() - since > self.transient_limit:
                await self._dead_letter(mapping, message, f"failing for {self.transient_limit / 3600:g} h: {reason}",
                                        attempt)
                return
            delay = delays[min(waits, len(delays)) - 1]
            out.update({TRANSIENT_HEADER: waits, FAILING_SINCE_HEADER: since})
            log.warning("event failed transiently; waiting", waits=waits, retry_in=delay, error=reason)
            await self._wait(message, delay, out)
            return
        attempt += 1
        delay_or_none = self.broker.topology.delay_for_attempt(attempt)
        if delay_or_none is None:
            await self._dead_letter(mapping, message, reason, attempt)
            return
        out[ATTEMPT_HEADER] = attempt
        log.warning("event failed; retrying", attempt=attempt, retry_in=delay_or_none, error=reason)
        await self._wait(message, delay_or_none, out)

    async def _wait(self, message: AbstractIncomingMessage, delay: int, headers: dict[str, Any]) -> None:
        """Into the wait queue of `delay`, due then: a worker's RetryWaits moves it back to the mapping queue."""
        due = int(time.time() * 1000) + delay * 1000
        await self._pass_on(message, "", self.broker.topology.delay_queue(delay), {**headers, DUE_HEADER: due})

    async def _dead_letter(
        self, mapping: TableMapping, message: AbstractIncomingMessage, reason: str, attempt: int
    ) -> None:
        log.error("event dead-lettered", attempts=attempt, error=reason)
        if await self._pass_on(message, self.broker.topology.dead_exchange, mapping.name,
                               {MAPPING_HEADER: mapping.name, ATTEMPT_HEADER: attempt, ERROR_HEADER: reason}):
            DEAD_LETTERS.labels(mapping.name).inc()

    async def _pass_on(self, message: AbstractIncomingMessage, exchange: str, routing_key: str,
                       headers: dict[str, Any]) -> bool:
        """Publish (confirmed) in the message's place, then acknowledge it. A refused publish is tried again a few
        times: RabbitMQ also returns as unroutable a message for a quorum queue whose leader is being elected
        again after a node loss. Still refused: the message goes back to its queue (nack) and comes round again,
        rather than staying unacknowledged until consumer_timeout. False when it was not passed on."""
        for attempt in range(1, PASS_ON_ATTEMPTS + 1):
            if not still_ours(message):
                return False  # its channel closed: RabbitMQ delivers it again
            try:
                await self.broker.publish(exchange, routing_key, message.body, message_id=message.message_id or "",
                                          correlation_id=message.correlation_id or "", headers=headers)
                break
            except Exception as exc:
                log.warning("could not publish; trying again", queue=routing_key or exchange, attempt=attempt,
                            error=f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(PASS_ON_PAUSE)
        else:
            with contextlib.suppress(Exception):  # a closed channel has given it back already
                await message.nack(requeue=True)
            return False
        await message.ack()
        return True


def transient_failure(error: BaseException) -> bool:
    """Failures that say nothing about the record: the same run may well succeed later (among them
    `consumers.coalesce.RunInterrupted`, a ConnectionError: the run this event folded into was cancelled)."""
    if isinstance(error, (MappingHeld, TimeoutError, ConnectionError)):
        return True
    if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                          sqlalchemy.exc.TimeoutError, sqlalchemy.exc.DisconnectionError)):
        return True  # the store is away (restarting, failing over, out of connections)
    return is_transient(error)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


Background = Callable[[Worker], list[Coroutine[Any, Any, None]]]


async def run_worker(broker: Broker, relay: OutboxRelay, prefetch: int, stop: asyncio.Event,
                     handlers: dict[str, Handler] | None = None, background: Background | None = None, *,
                     handler_timeout: float = 600.0, transient_hours: float = 24.0) -> None:
    """Connect, consume until `stop` is set, then stop consuming and let in-flight messages finish.
    `background` gives coroutines to run beside the consumers (settings refresh, jobs)."""
    tasks = [asyncio.create_task(relay.run())]
    waits: RetryWaits | None = None
    try:
        await broker.connect_forever()
        waits = RetryWaits(broker)
        await waits.start()
        worker = Worker(broker, prefetch, handlers, handler_timeout=handler_timeout,
                        transient_hours=transient_hours)
        tasks += [asyncio.create_task(c) for c in (background(worker) if background else [])]
        await worker.start()
        await stop.wait()
        await worker.stop()
        await asyncio.sleep(0.5)  # let handlers that already started finish and ack
    finally:
        if waits is not None:  # what it holds goes back to the wait queues, for the other workers
            await waits.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await broker.close()
