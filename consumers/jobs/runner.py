"""Runs the worker's background jobs beside the consumers: each job ticks when woken by a control
message (`<ns>.jobs`) or every `jobs_poll_seconds`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

from consumers.jobs.catchup import CatchUpJob
from consumers.jobs.common import kick, listen
from consumers.jobs.fullsync import FullSync
from consumers.jobs.history import HistoryPruneJob
from consumers.jobs.keeper import KeeperJob
from consumers.jobs.poll import PollJob
from consumers.jobs.reconcile import ReconcileJobs
from consumers.jobs.settings import JobSettings
from consumers.sync import SyncEngine
from service.broker import Broker
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.logging import get_logger
from service.settings import Settings, read_settings
from service.store.db import Database

log = get_logger(__name__)


class JobRunner:
    def __init__(self, settings: Settings, db: Database, broker: Broker, engine: SyncEngine,
                 bc: BusinessCentralClient, dv: DataverseClient, job_settings: JobSettings | None = None) -> None:
        self.broker = broker
        self.job_settings = job_settings or read_settings(JobSettings)
        self.full_sync = FullSync(db, engine, self.job_settings, self.kick)
        self.catch_up = CatchUpJob(db, engine, settings, self.job_settings)
        self.keeper = KeeperJob(settings, db, bc, dv, self.job_settings, self.kick)
        self.poll = PollJob(self.catch_up)
        self.reconcile = ReconcileJobs(db, engine, self.job_settings, self.kick)
        self.history = HistoryPruneJob(db, settings.history_days)
        engine.reconcile_requested = functools.partial(self.kick, "reconcile")
        self.wakes = {"full-sync": self.full_sync.wake, "catch-up": asyncio.Event(), "keeper": asyncio.Event(),
                      "poll": asyncio.Event(), "reconcile": asyncio.Event(), "history": asyncio.Event()}

    async def kick(self, kind: str) -> None:
        self.wakes[kind].set()
        await kick(self.broker, kind)

    def _on_kind(self, kind: str) -> None:
        self.wakes[kind].set()

    async def run(self) -> None:
        """Until cancelled (the broker is connected when `run_worker` starts this)."""
        try:
            await listen(self.broker, self._on_kind)
        except Exception as exc:  # polling still finds the work
            log.warning("job control messages unavailable", error=str(exc)[:200])
        loops = [self._loop("full-sync", self.full_sync.tick), self._loop("catch-up", self.catch_up.tick),
                 self._loop("keeper", self.keeper.tick), self._loop("poll", self.poll.tick),
                 self._loop("reconcile", self.reconcile.tick), self._loop("history", self.history.tick)]
        log.info("jobs running", poll_seconds=self.job_settings.jobs_poll_seconds)
        try:
            await asyncio.gather(*loops)
        finally:
            await self.full_sync.stop()
            await self.reconcile.stop()

    async def _loop(self, kind: str, tick: Callable[[], Awaitable[None]]) -> None:
        wake = self.wakes[kind]
        while True:
            wake.clear()
            try:
                await tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("job tick failed", job=kind, error=f"{type(exc).__name__}: {exc}"[:500])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.job_settings.jobs_poll_seconds)
