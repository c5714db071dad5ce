"""The Dataverse stand-in as one FastAPI app: Web API v9.2, webhooks, and `/_sandbox` control endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from sandbox.config import SandboxConfig
from sandbox.dataverse import control, webapi
from sandbox.dataverse.delivery import Dispatcher
from sandbox.dataverse.engine import Organization
from sandbox.dataverse.protection import Budget, Faults
from sandbox.dataverse.state import DataverseState
from sandbox.tokens import TokenIssuer


def create_app(config: SandboxConfig, tokens: TokenIssuer, *,
               webhook_transport: httpx.AsyncBaseTransport | None = None,
               webhook_timeout: float = 60.0, webhook_retry_delay: float | None = None) -> FastAPI:
    """`webhook_transport` lets tests receive webhooks in-process; the defaults are Dataverse's."""
    org = Organization(config.client_id)
    faults = Faults()
    dispatcher = Dispatcher(org, faults, organization_host=f"127.0.0.1:{config.dataverse_port}",
                            timeout=webhook_timeout,
                            retry_delay=webhook_retry_delay if webhook_retry_delay is not None
                            else 1.0 * config.time_factor,
                            transport=webhook_transport,
                            primary_name_image=config.async_primary_name_image,
                            zero_operation_id=config.zero_operation_id)
    state = DataverseState(config, tokens, org, dispatcher, Budget(), faults)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await dispatcher.close()

    app = FastAPI(title="bcsync sandbox: Dataverse", lifespan=lifespan)
    app.state.dataverse = state
    app.include_router(webapi.router(state))
    app.include_router(control.router(state))
    return app
