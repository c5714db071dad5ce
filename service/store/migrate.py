"""Bring the database schema to the newest Alembic revision (run at the start of api and worker)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextlib.contextmanager
def _serialized(url: str) -> Iterator[None]:
    """Processes starting together on one SQLite file migrate one after the other (PostgreSQL: an advisory
    lock in env.py). SQLite runs DDL outside a transaction, so without this two of them may both create
    the same table."""
    database = make_url(url).database
    if not url.startswith("sqlite") or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(url: str) -> None:
    with _serialized(url):
        command.upgrade(alembic_config(url), "heads")


async def upgrade_async(url: str) -> None:
    # env.py runs its own event loop (asyncio.run), so it needs a thread without one.
    await asyncio.to_thread(upgrade, url)
