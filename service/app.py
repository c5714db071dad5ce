"""The FastAPI application of `bcsync api`: webhook doors, health, metrics, admin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service import __version__
from service.api import admin, admin_history, admin_jobs, admin_mappings, admin_records, health, openapi, webhooks
from service.api.body import BodyLimit
from service.broker import broker_from_settings
from service.connectors.auth import TokenError
from service.connectors.factory import make_clients
from service.connectors.http import ApiError
from service.console.app import create_console
from service.identity import IntegrationIdentity
from service.intake_writer import IntakeWriter
from service.logging import get_logger, redact_text
from service.metrics import StoredSyncRecords, export_stored_sync_records
from service.relay import OutboxRelay
from service.settings import Settings
from service.store import synclog
from service.store.db import Database
from service.store.installation import integration_tag
from service.store.migrate import upgrade_async

log = get_logger(__name__)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """Invalid input is a 400 with every problem named (FastAPI's default would be 422), and a log line."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc'] if p != 'body') or 'body'}: {error['msg']}" for error in exc.errors()
    )[:1000]
    log.warning("request refused", path=request.url.path, status=400, detail=problems)
    return JSONResponse({"detail": problems}, status_code=400)


async def upstream_failed(request: Request, exc: Exception) -> JSONResponse:
    """Business Central, Dataverse or Entra refused what an admin call needed: a 502 that says which and why
    (already redacted: ApiError and TokenError carry no secret), not a 500 with a traceback."""
    detail = redact_text(str(exc))[:1000]
    log.warning("upstream system failed", path=request.url.path, status=502, detail=detail)
    return JSONResponse({"detail": detail}, status_code=502)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upgrade_async(settings.database_url)
        db = Database(settings.database_url, timeout=settings.database_timeout_seconds)
        broker = broker_from_settings(settings)
        relay = OutboxRelay(db, broker, dedupe_days=settings.dedupe_days)
        # Our Dataverse writes carry the installation's tag; events carrying it are our own echoes.
        identity = IntegrationIdentity(settings.integration_user_id, await integration_tag(settings, db))
        writer = IntakeWriter(db, max_waiting=settings.intake_queue_events)
        stored_records = StoredSyncRecords()
        export_stored_sync_records(stored_records)

        async def follow_sync_counters() -> None:
            while True:
                with contextlib.suppress(Exception):  # the database may be away for a moment
                    async with db.session() as session:
                        stored_records.snapshot = await synclog.totals(session)
                await asyncio.sleep(2.0)

        tasks = [asyncio.create_task(t) for t in (broker.connect_forever(), relay.run(), writer.run(),
                                                  follow_sync_counters())]
        bc = dv = None
        if all((settings.tenant_id, settings.client_id, settings.client_secret, settings.bc_company_id,
                settings.dataverse_url)):
            # For the admin API (setup, couplings); lazy: nothing is called yet.
            bc, dv = make_clients(settings, identity.tag)
        if identity.user_id is None and dv is not None:
            tasks.append(asyncio.create_task(identity.learn(dv.who_am_i)))
        app.state.bc, app.state.dv = bc, dv
        app.state.settings, app.state.db, app.state.broker = settings, db, broker
        app.state.relay, app.state.identity, app.state.writer = relay, identity, writer
        log.info("api started", host=settings.host, port=settings.port, namespace=settings.namespace)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in (bc, dv):
                if client is not None:
                    await client.aclose()
            await broker.close()
            await db.close()

    app = FastAPI(
        title="bcsync",
        version=__version__,
        description="Near-real-time sync of Business Central and Dynamics 365 Sales (Dataverse).",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ApiError, upstream_failed)
    app.add_exception_handler(TokenError, upstream_failed)
    app.add_middleware(BodyLimit)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(admin_mappings.router)
    app.include_router(admin_records.router)
    app.include_router(admin_history.router)
    app.include_router(admin_jobs.router)
    # The operator console (HTML pages, own session cookie and error pages); not in the OpenAPI document.
    app.mount("/console", create_console(settings, app.state))
    openapi.install(app)
    return app
