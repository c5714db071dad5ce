"""The api in-process without its lifespan: real routes, settings and validation, with the long-lived objects
(store, relay, broker, identity) replaced by small fakes. For fast property tests of the HTTP doors."""

from __future__ import annotations

import warnings
from typing import Any

from fastapi import FastAPI

with warnings.catch_warnings():  # starlette asks for httpx2, which this project does not use
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from schemas.events import ChangeEvent
from service.app import create_app
from tests.harness import INTEGRATION_USER, make_settings

__all__ = ["FakeWriter", "TestClient", "client", "inprocess_app"]


class FakeWriter:
    """Stores nothing, remembers everything: every event is new."""

    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []

    async def store(self, events: list[ChangeEvent]) -> int:
        self.events.extend(events)
        return len(events)


class FakeRelay:
    def kick(self) -> None:
        pass


class FakeIdentity:
    user_id: str | None = INTEGRATION_USER
    tag: str | None = "bcsync-inprocess-test-tag"


def inprocess_app(**overrides: Any) -> FastAPI:
    # Nothing connects to these: the lifespan never runs (see `client`).
    settings = make_settings("sqlite+aiosqlite:///nowhere/unused.db", "unused", **overrides)
    app = create_app(settings)
    app.state.settings, app.state.writer, app.state.relay = settings, FakeWriter(), FakeRelay()
    app.state.identity, app.state.bc, app.state.dv = FakeIdentity(), None, None
    app.state.db = app.state.broker = None  # routes that get as far as the store fail the test
    return app


def client(app: FastAPI) -> TestClient:
    """Server exceptions are raised in the test (an unhandled exception fails it). Not to be used as a
    context manager: that would run the lifespan, which replaces the fakes with the real store and broker."""
    return TestClient(app, raise_server_exceptions=True)
