"""Fixtures of the security tests: one real `bcsync api` process (with the sandbox, no worker) on a fresh
PostgreSQL database and the real RabbitMQ, shared by the tests of a module."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_ADMIN_URL
from tests.e2e.stack import Stack


@dataclass
class LiveApi:
    """A running api: its base URL and its log (JSON lines), read from `offset` on."""

    url: str
    log: Path
    stack: Stack
    offset: int = 0

    def new_log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines written since the last call (the api writes whole lines)."""
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        events = []
        for line in data[:complete].decode(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"level": "raw", "event": line})  # a traceback printed outside the logger
        return events


async def _create_database(name: str) -> str:
    admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    await admin.dispose()
    return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


async def _drop_database(name: str) -> None:
    admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.dispose()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """Sandbox + api as real processes (PostgreSQL, RabbitMQ); driven from synchronous tests."""
    loop = asyncio.new_event_loop()
    name = f"bcsync_sec_{uuid.uuid4().hex[:12]}"
    database_url = loop.run_until_complete(_create_database(name))
    stack = Stack(tmp_path_factory.mktemp("security-stack"), workers=0, database_url=database_url)
    try:
        loop.run_until_complete(stack.start())
        assert stack.api is not None
        yield LiveApi(stack.api_url, stack.api.log, stack)
    finally:
        loop.run_until_complete(stack.stop())
        loop.run_until_complete(_drop_database(name))
        loop.close()
