"""Shared FastAPI dependencies: the process's long-lived objects, reached through `app.state`."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.broker import Broker
from service.identity import IntegrationIdentity
from service.intake_writer import IntakeWriter
from service.relay import OutboxRelay
from service.settings import Settings
from service.store.db import Database


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _db(request: Request) -> Database:
    return request.app.state.db


async def _broker(request: Request) -> Broker:
    return request.app.state.broker


async def _relay(request: Request) -> OutboxRelay:
    return request.app.state.relay


async def _writer(request: Request) -> IntakeWriter:
    return request.app.state.writer


async def _identity(request: Request) -> IntegrationIdentity:
    return request.app.state.identity


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_db)]
BrokerDep = Annotated[Broker, Depends(_broker)]
RelayDep = Annotated[OutboxRelay, Depends(_relay)]
WriterDep = Annotated[IntakeWriter, Depends(_writer)]
IdentityDep = Annotated[IntegrationIdentity, Depends(_identity)]


def secret_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; nothing matches an unset secret."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
