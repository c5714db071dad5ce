"""The subscription keeper in the worker: every `keeper_minutes`, one worker (lease `job:keeper`) runs
`service.subscriptions.keep` — once anything is registered (by `bcsync setup` or an admin refresh)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from consumers.jobs.settings import JobSettings
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.logging import get_logger
from service.settings import Settings
from service.store import jobs
from service.store.db import Database
from service.store.outbox import aware, utcnow
from service.subscriptions import KeeperBusy, enrolled, keep, keeper_lease

log = get_logger(__name__)


class KeeperJob:
    def __init__(self, settings: Settings, db: Database, bc: BusinessCentralClient, dv: DataverseClient,
                 job_settings: JobSettings, kick: Callable[[str], Awaitable[None]]) -> None:
        self.settings, self.db, self.bc, self.dv = settings, db, bc, dv
        self.job_settings, self.kick = job_settings, kick
        self.not_before = datetime.min.replace(tzinfo=UTC)  # this worker's own back-off while not enrolled

    async def tick(self, force: bool = False) -> None:
        minutes = self.job_settings.keeper_minutes
        if minutes <= 0 and not force:
            return
        now = utcnow()
        if not force:
            if now < self.not_before:
                return
            async with self.db.session() as session:
                checks = [s.last_check for s in await jobs.subscription_states(session) if s.last_check]
            if checks and max(aware(c) for c in checks) > now - timedelta(minutes=minutes):
                return  # some worker (or the api) checked recently
        try:
            async with keeper_lease(self.db, wait_seconds=0):  # taken, or another pass runs: not this tick
                # Whatever happens (not set up yet, BC unreachable), this worker tries again after the interval.
                self.not_before = now + timedelta(minutes=max(minutes, 0.05))
                await self._pass()
        except KeeperBusy:
            return

    async def _pass(self) -> None:
        if not await enrolled(self.db, self.bc, self.settings):
            return
        if not (self.settings.bc_client_state and self.settings.dataverse_webhook_key):
            log.error("subscription keeper cannot re-register webhooks: set BCSYNC_BC_CLIENT_STATE and "
                      "BCSYNC_DATAVERSE_WEBHOOK_KEY for the workers too")
            return
        report = await keep(self.settings, self.db, self.bc, self.dv)
        if report.caught_up:
            await self.kick("catch-up")
