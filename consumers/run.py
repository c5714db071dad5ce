"""`python -m consumers` / `bcsync worker`: the worker process."""

from __future__ import annotations

import asyncio
import signal

from consumers.assembly import assemble
from consumers.http import serve as serve_health
from consumers.jobs.settings import JobSettings
from consumers.worker import run_worker as consume
from service.broker import broker_from_settings
from service.logging import configure_logging, get_logger
from service.relay import OutboxRelay
from service.settings import Settings, load_settings, read_settings
from service.store.db import Database
from service.store.installation import integration_tag
from service.store.migrate import upgrade_async

log = get_logger(__name__)

WORKER_REQUIRED = ("tenant_id", "client_id", "client_secret", "bc_company_id", "dataverse_url")


def worker_pool(settings: Settings, jobs: JobSettings) -> tuple[int, int]:
    """PostgreSQL connections a worker keeps: one per run (live events, full synchronization) and a few for its
    background loops (outbox relay, settings, jobs, budget share, health), plus a little overflow for a lease
    renewal overlapping a run's own session."""
    return settings.worker_concurrency + jobs.full_sync_lines * jobs.full_sync_concurrency + 4, 8


def run_worker() -> None:
    settings = load_settings(*WORKER_REQUIRED)
    jobs = read_settings(JobSettings)
    configure_logging(settings.log_level)

    async def main() -> None:
        await upgrade_async(settings.database_url)
        db = Database(settings.database_url, worker_pool(settings, jobs), timeout=settings.database_timeout_seconds)
        broker = broker_from_settings(settings)
        relay = OutboxRelay(db, broker, dedupe_days=settings.dedupe_days)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health = None
        if settings.worker_metrics_port:  # /healthz, /readyz, /metrics
            health = asyncio.create_task(serve_health(db, broker, settings.host, settings.worker_metrics_port))
        assembly = assemble(settings, db, broker, jobs, tag=await integration_tag(settings, db))
        try:
            await consume(broker, relay, settings.worker_prefetch, stop, assembly.handlers, assembly.background,
                          handler_timeout=settings.handler_timeout_seconds,
                          transient_hours=settings.transient_retry_hours)
        finally:
            if health is not None:
                health.cancel()
                await asyncio.gather(health, return_exceptions=True)
            await assembly.close()
            await db.close()
        log.info("worker stopped")

    asyncio.run(main())
