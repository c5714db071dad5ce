"""The FastAPI application of `bcsync api`: webhook doors, health, metrics, admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import admin, health, webhooks
from service.broker import broker_from_settings
from service.connectors.auth import TokenProvider
from service.connectors.dataverse import DataverseClient
from service.identity import IntegrationIdentity
from service.intake_writer import IntakeWriter
from service.logging import get_logger
from service.relay import OutboxRelay
from service.settings import Settings
from service.store.db import Database
from service.store.migrate import upgrade_async

log = get_logger(__name__)


def dataverse_client(settings: Settings) -> DataverseClient:
    assert settings.tenant_id and settings.client_id and settings.client_secret
    tokens = TokenProvider(
        str(settings.authority_host), settings.tenant_id, settings.client_id,
        settings.client_secret.get_secret_value(),
    )
    return DataverseClient(settings.dataverse_api, settings.dataverse_token_scope, tokens)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upgrade_async(settings.database_url)
        db = Database(settings.database_url)
        broker = broker_from_settings(settings)
        relay = OutboxRelay(db, broker, dedupe_days=settings.dedupe_days)
        identity = IntegrationIdentity(settings.integration_user_id)
        writer = IntakeWriter(db)
        tasks = [asyncio.create_task(t) for t in (broker.connect_forever(), relay.run(), writer.run())]
        client = None
        if identity.user_id is None and settings.dataverse_url is not None:
            client = dataverse_client(settings)
            tasks.append(asyncio.create_task(identity.learn(client.who_am_i)))
        app.state.settings, app.state.db, app.state.broker = settings, db, broker
        app.state.relay, app.state.identity, app.state.writer = relay, identity, writer
        log.info("api started", host=settings.host, port=settings.port, namespace=settings.namespace)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    return app
