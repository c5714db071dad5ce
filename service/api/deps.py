"""Shared FastAPI dependencies: the process's long-lived objects, reached through `app.state`."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.broker import Broker
from service.identity import IntegrationIdentity
from service.relay import OutboxRelay
from service.settings import Settings
from service.store.db import Database


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _db(request: Request) -> Database:
    return request.app.state.db


def _broker(request: Request) -> Broker:
    return request.app.state.broker


def _relay(request: Request) -> OutboxRelay:
    return request.app.state.relay


def _identity(request: Request) -> IntegrationIdentity:
    return request.app.state.identity


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_db)]
BrokerDep = Annotated[Broker, Depends(_broker)]
RelayDep = Annotated[OutboxRelay, Depends(_relay)]
IdentityDep = Annotated[IntegrationIdentity, Depends(_identity)]


def secret_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; nothing matches an unset secret."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
