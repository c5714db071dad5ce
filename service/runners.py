"""Process entry points shared by the CLI and `python -m service` / `python -m consumers`."""

from __future__ import annotations

import asyncio
import signal

import uvicorn
from prometheus_client import start_http_server

from service.broker import broker_from_settings
from service.logging import configure_logging, get_logger
from service.relay import OutboxRelay
from service.settings import Settings, SettingsError, load_settings
from service.store.db import Database
from service.store.migrate import upgrade_async

log = get_logger(__name__)

DATAVERSE_CREDENTIALS = ("tenant_id", "client_id", "client_secret", "dataverse_url")


def api_settings() -> Settings:
    settings = load_settings("dataverse_webhook_key", "bc_client_state")
    if settings.integration_user_id is None:
        # Without a given integration user id, WhoAmI needs the Dataverse connection.
        for name in DATAVERSE_CREDENTIALS:
            if getattr(settings, name) in (None, ""):
                raise SettingsError(
                    f"bcsync: missing setting BCSYNC_{name.upper()} "
                    "(needed for WhoAmI; or set BCSYNC_INTEGRATION_USER_ID)"
                )
    return settings


def run_api() -> None:
    settings = api_settings()
    configure_logging(settings.log_level)
    from service.app import create_app  # after logging is set up

    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        # The access log would print `?code=<webhook key>`: the app logs each webhook itself.
        access_log=False, log_config=None, log_level=settings.log_level.lower(),
    )


WORKER_REQUIRED = ("tenant_id", "client_id", "client_secret", "bc_company_id", "dataverse_url")


def run_worker() -> None:
    settings = load_settings(*WORKER_REQUIRED)
    configure_logging(settings.log_level)
    from consumers.assembly import assemble
    from consumers.worker import run_worker as consume

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
