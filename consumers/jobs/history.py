"""Retention of the record history: every worker prunes entries older than `BCSYNC_HISTORY_DAYS`, every
`EVERY_SECONDS`, oldest first in batches of `BATCH` rows, one short transaction per batch, until a batch comes back
short; then the table's planner statistics are refreshed (SQLite only). Several workers may prune at once: each
batch deletes what it finds (PostgreSQL: skipping rows another worker is deleting), so they share the work and
nothing is deleted twice."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from service.logging import get_logger
from service.store import history
from service.store.db import Database
from service.store.outbox import utcnow

log = get_logger(__name__)
EVERY_SECONDS = 600.0
BATCH = 5000


class HistoryPruneJob:
    def __init__(self, db: Database, days: int, every_seconds: float = EVERY_SECONDS, batch: int = BATCH) -> None:
        self.db, self.days, self.every_seconds, self.batch = db, days, every_seconds, batch
        self.next_run = 0.0  # monotonic; the first tick prunes

    async def tick(self) -> None:
        """Prune when due (the job runner ticks every few seconds)."""
        if time.monotonic() < self.next_run:
            return
        self.next_run = time.monotonic() + self.every_seconds
        await self.prune()

    async def prune(self) -> int:
        """Delete every entry older than the retention period; the number deleted."""
        older_than = utcnow() - timedelta(days=self.days)
        deleted = batches = 0
        while True:
            async with self.db.session() as session:
                count = await history.prune(session, older_than, self.batch)
            deleted += count
            batches += 1
            if count < self.batch:
                break
            await asyncio.sleep(0)  # the worker's runs go on between batches
        if deleted:
            log.info("record history pruned", deleted=deleted, batches=batches, older_than=older_than.isoformat())
        async with self.db.session() as session:
            await history.refresh_statistics(session)
        return deleted
