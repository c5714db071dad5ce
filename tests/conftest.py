"""Shared fixtures: a unique RabbitMQ namespace per test, databases (SQLite and PostgreSQL), samples."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from schemas.mappings import MAPPINGS
from service.topology import Topology

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
if not SAMPLES.exists():  # a checkout without ../shared: the copies kept in tests/samples
    SAMPLES = Path(__file__).parent / "samples"

BROKER_URL = os.environ.get("BCSYNC_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
RETRY_DELAYS_IN_TESTS = [1, 5, 30, 120, 600]  # the default delays and the tests' "1,1": their retry queues
POSTGRES_ADMIN_URL = os.environ.get("BCSYNC_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def sample_text(name: str) -> str:
    return (SAMPLES / name).read_text()


def sample(name: str) -> Any:
    return json.loads(sample_text(name))


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A broker namespace of the test's own; its queues are deleted after the test (the api or worker it ran
    declared them). Quorum queues outlive their test otherwise, each holding file handles in the broker: a whole
    suite's left-overs exhausted a RabbitMQ limited to 1,024 open files, which stopped answering (every later
    test then waited out its timeout, and CI its 90 minutes)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    await delete_namespace(name, RETRY_DELAYS_IN_TESTS)


@pytest.fixture
async def rabbit(namespace: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel for the test's own inspection; deletes the namespace's queues and exchanges after."""
    connection = await aio_pika.connect_robust(BROKER_URL)
    channel = await connection.channel()
    yield channel
    await connection.close()
    await delete_namespace(namespace, list(range(1, 601)))  # whatever delays the test used


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"bcsync_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("BCSYNC_"):
            monkeypatch.delenv(key)
    yield


async def delete_namespace(namespace: str, retry_delays: list[int]) -> None:
    """Delete the namespace's queues and exchanges (as the `rabbit` fixture of tests/conftest.py does)."""
    topology = Topology(namespace)
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        names = [topology.mapping_queue(m.name) for m in MAPPINGS] + [topology.dead_queue]
        for name in names + [topology.delay_queue(s) for s in retry_delays]:
            try:
                await channel.queue_delete(name)
            except Exception:
                channel = await connection.channel()
        for exchange in (topology.events_exchange, topology.retry_exchange, topology.dead_exchange):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()
