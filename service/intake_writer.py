"""Group commit for the webhook doors: concurrent requests share one outbox transaction.

Each request hands its events over and waits; a single writer task takes everything that is waiting,
stores it in one transaction and then answers every waiting request. Durability is the same (no
request gets its 202 before its events are committed) but a burst of webhooks costs one commit, not one
each, and writers no longer fight over SQLite's single write lock.

The queue is bounded: while `max_waiting` events wait for the writer (a slow or hung database), `store`
refuses at once with `IntakeFull` (the door answers 503) instead of queueing without end. Events whose request
stopped waiting (the door answered 503 for time) are still written: what commits is kept, and the sender's
retry of them is a duplicate by dedupe key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from schemas.events import ChangeEvent
from service.logging import get_logger
from service.store import outbox
from service.store.db import Database

log = get_logger(__name__)


@dataclass
class _Pending:
    events: list[ChangeEvent]
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class IntakeFull(Exception):
    """The intake queue holds its bound of events: the caller should answer 503 now rather than wait."""


class IntakeWriter:
    def __init__(self, db: Database, max_batch: int = 500, max_waiting: int = 10_000) -> None:
        self.db = db
        self.max_batch = max_batch
        self.max_waiting = max_waiting  # events waiting for the writer; a request is let in while fewer wait
        self.waiting = 0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def store(self, events: list[ChangeEvent]) -> int:
        """Store events durably (deduplicated); returns how many were new. Raises if not stored (`IntakeFull`
        at once when the queue is full)."""
        if self.waiting >= self.max_waiting:
            raise IntakeFull(f"{self.waiting} events already wait for the store")
        pending = _Pending(events)
        self.waiting += len(events)
        self._queue.put_nowait(pending)
        return await pending.done

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].events)
            while size < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].events)
            self.waiting -= size
            await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            async with self.db.session() as session:
                new = await outbox.store_events(session, [e for p in batch for e in p.events])
        except asyncio.CancelledError:
            for pending in batch:
                pending.done.cancel()
            raise
        except Exception as exc:
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(exc)
            return
        flags = iter(new)
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(sum(next(flags) for _ in pending.events))
