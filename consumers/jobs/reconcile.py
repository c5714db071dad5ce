"""Reconciliations as leased jobs: what a collection event asked for (consumers/sync.py `request_reconcile`)
runs here, in whichever worker claims it, under a lease renewed while it runs.

- A worker that dies leaves its lease to run out; the job is then taken up again (from the start: a
  reconciliation is idempotent, records already applied are found unchanged).
- A mapping put on hold gives its job back; it runs after the resume.
- A transient failure (the source not answering, throttling, 5xx, the store away) waits and runs again
  (`RETRY_SECONDS`, longer each attempt); any other failure ends the job as failed, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from consumers.errors import MappingHeld
from consumers.jobs.settings import JobSettings
from consumers.sync import ReconcileCounts, SyncEngine
from consumers.worker import transient_failure
from service.logging import get_logger
from service.store import reconciles
from service.store.db import Database
from service.store.jobs import mapping_config
from service.store.outbox import utcnow

log = get_logger(__name__)
RETRY_SECONDS = (10, 30, 60, 300, 600)  # waits before the runs after a transient failure (then the last again)
KEEP_DAYS = 7  # finished and failed jobs listed by the admin API this long


class JobLost(Exception):
    """The job's lease ran out and another worker took it up: this run stops."""


class ReconcileJobs:
    def __init__(self, db: Database, engine: SyncEngine, settings: JobSettings,
                 kick: Callable[[str], Awaitable[None]]) -> None:
        self.db, self.engine, self.settings, self.kick = db, engine, settings, kick
        self.owner = uuid.uuid4().hex
        self.running: dict[int, asyncio.Task[None]] = {}
        self.lease_seconds = settings.line_lease_seconds

    async def tick(self) -> None:
        """Claim what may run now, up to `reconcile_jobs` at once in this worker."""
        while len(self.running) < self.settings.reconcile_jobs:
            async with self.db.session() as session:
                held = {name for name in self.engine.rules if (await mapping_config(session, name))[1]}
                job = await reconciles.claim(session, self.owner, self.lease_seconds, held, self.running)
            if job is None or job.id is None:
                break
            task = asyncio.create_task(self.run(job.id, job.mapping, job.side, job.filter, job.full, job.attempt))
            self.running[job.id] = task
            task.add_done_callback(functools.partial(self._done, job.id))
        async with self.db.session() as session:
            await reconciles.prune(session, utcnow() - timedelta(days=KEEP_DAYS))

    def _done(self, job_id: int, _: object) -> None:
        self.running.pop(job_id, None)

    async def stop(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self, job_id: int, mapping: str, side: str, filter_: str | None, full: bool,
                  attempt: int) -> None:
        structlog.contextvars.bind_contextvars(mapping=mapping, reconcile_job=job_id)
        log.info("reconciliation started", side=side, full=full, attempt=attempt)
        latest = ReconcileCounts()

        async def progress(counts: ReconcileCounts) -> None:
            latest.listed, latest.checked, latest.failed = counts.listed, counts.checked, counts.failed
            async with self.db.session() as session:
                ours = await reconciles.progress(session, job_id, self.owner, attempt, self.lease_seconds,
                                                 listed=counts.listed, checked=counts.checked, failed=counts.failed)
            if not ours:
                raise JobLost(job_id)

        async def keep_lease() -> None:  # records can be slow: the lease must not depend on their pace
            while True:
                await asyncio.sleep(self.lease_seconds / 4)
                with contextlib.suppress(JobLost):
                    await progress(latest)

        keeper = asyncio.create_task(keep_lease())
        try:
            rule = self.engine.rules.get(mapping)
            if rule is None or rule.unavailable:
                why = (f"{mapping} has no sync rule here" if rule is None
                       else f"{mapping} cannot run: {rule.unavailable}")
                await self._finish(job_id, attempt, reconciles.FINISHED, why)
                return
            counts = await self.engine.reconcile(rule, side, filter_, full, progress)
            await progress(counts)
            await self._finish(job_id, attempt, reconciles.FINISHED, None)
            log.info("reconciliation finished", side=side, full=full, listed=counts.listed, checked=counts.checked,
                     failed=counts.failed)
        except JobLost:
            log.info("reconciliation taken up by another worker; stopped")
        except MappingHeld:
            await self._release(job_id, attempt, None, "the mapping was put on hold; runs again after the resume")
        except asyncio.CancelledError:  # the worker stops: give it back, another worker takes it up
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(job_id, attempt, None, "its worker stopped"))
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            if transient_failure(exc):
                wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS)) - 1]
                log.warning("reconciliation failed transiently; runs again", retry_in=wait, error=reason[:300])
                await self._release(job_id, attempt, utcnow() + timedelta(seconds=wait), reason)
            else:
                log.error("reconciliation failed", error=reason[:500])
                await self._finish(job_id, attempt, reconciles.FAILED, reason)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _finish(self, job_id: int, attempt: int, status: str, message: str | None) -> None:
        async with self.db.session() as session:
            await reconciles.finish(session, job_id, self.owner, attempt, status, message)

    async def _release(self, job_id: int, attempt: int, not_before: datetime | None, message: str) -> None:
        async with self.db.session() as session:
            await reconciles.release(session, job_id, self.owner, attempt, not_before=not_before, message=message)
