"""`python -m consumers` / `bcsync worker`: the worker process."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from consumers.assembly import assemble
from consumers.worker import run_worker as consume
from service.broker import broker_from_settings
from service.logging import configure_logging, get_logger
from service.relay import OutboxRelay
from service.settings import load_settings
from service.store.db import Database
from service.store.migrate import upgrade_async

log = get_logger(__name__)

WORKER_REQUIRED = ("tenant_id", "client_id", "client_secret", "bc_company_id", "dataverse_url")


def run_worker() -> None:
    settings = load_settings(*WORKER_REQUIRED)
    configure_logging(settings.log_level)

    async def main() -> None:
        await upgrade_async(settings.database_url)
        db = Database(settings.database_url)
        broker = broker_from_settings(settings)
        relay = OutboxRelay(db, broker, dedupe_days=settings.dedupe_days)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if settings.worker_metrics_port:
            try:
                start_http_server(settings.worker_metrics_port, addr=settings.host)
            except OSError as exc:  # another worker on this machine has the port
                log.warning("worker metrics port busy", port=settings.worker_metrics_port, error=str(exc))
        assembly = assemble(settings, db, broker)
        try:
            await consume(broker, relay, settings.worker_prefetch, stop, assembly.handlers, assembly.background)
        finally:
            await assembly.close()
            await db.close()
        log.info("worker stopped")

    asyncio.run(main())
