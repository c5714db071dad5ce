"""The outbox relay: publishes stored events to RabbitMQ and marks them published.

The webhook handler kicks it after each commit (the fast path, so an event is on the broker within
milliseconds); a timer sweeps too, which picks up what earlier runs, other replicas or a crashed process
left behind. While the broker is unreachable it waits and the outbox grows; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

from service.broker import Broker, BrokerUnavailable
from service.logging import get_logger
from service.metrics import EVENTS_PUBLISHED, OUTBOX_PENDING
from service.store import outbox
from service.store.db import Database

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self, db: Database, broker: Broker, *, batch_size: int = 200, lease_seconds: float = 30.0,
        sweep_interval: float = 1.0, dedupe_days: int = 7,
    ) -> None:
        self.db = db
        self.broker = broker
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.sweep_interval = sweep_interval
        self.dedupe_window = timedelta(days=dedupe_days)
        self._wake = asyncio.Event()
        self._last_housekeeping = 0.0
        self.last_failures = 0

    def kick(self) -> None:
        """New events were committed: relay them now rather than at the next sweep."""
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                published = await self.relay_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("outbox relay failed", error=str(exc)[:300])
                await asyncio.sleep(min(0.5 * 2**failures, 10.0))
                continue
            if self.last_failures:
                await asyncio.sleep(1.0)  # the broker refused or is flapping: don't spin on kicks
            elif published >= self.batch_size:
                continue  # more may be waiting
            await self._housekeeping()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_interval)

    async def relay_once(self) -> int:
        """Publish one batch of pending events; returns how many were published."""
        self.last_failures = 0
        if not self.broker.ready:
            return 0
        async with self.db.session() as session:
            pending = await outbox.claim_pending(session, self.batch_size, self.lease_seconds)
        if not pending:
            return 0
        results = await asyncio.gather(
            *(self.broker.publish(
                self.broker.topology.events_exchange, event.routing_key, event.payload.encode(),
                message_id=event.dedupe_key, correlation_id=event.correlation_id,
            ) for event in pending),
            return_exceptions=True,
        )
        done = [e for e, r in zip(pending, results, strict=True) if not isinstance(r, BaseException)]
        failed = [(e, r) for e, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
        async with self.db.session() as session:
            await outbox.mark_published(session, [e.id for e in done])
            if failed:
                await outbox.release(session, [e.id for e, _ in failed], repr(failed[0][1]))
        for event in done:
            EVENTS_PUBLISHED.labels(event.source, event.entity).inc()
        self.last_failures = len(failed)
        if failed:
            error = failed[0][1]
            level = log.info if isinstance(error, BrokerUnavailable) else log.warning
            level("outbox events not published", count=len(failed), error=repr(error)[:300])
        return len(done)

    async def _housekeeping(self) -> None:
        """About once a second: refresh the pending gauge; now and then purge the dedupe window."""
        now = time.monotonic()
        if now - self._last_housekeeping < 1.0:
            return
        purge = int(now // 3600) != int(self._last_housekeeping // 3600)
        self._last_housekeeping = now
        async with self.db.session() as session:
            OUTBOX_PENDING.set(await outbox.count_pending(session))
            if purge:
                await outbox.purge_published(session, outbox.utcnow() - self.dedupe_window)
