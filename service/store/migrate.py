"""Bring the database schema to the newest Alembic revision (run at the start of api and worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "heads")


async def upgrade_async(url: str) -> None:
    # env.py runs its own event loop (asyncio.run), so it needs a thread without one.
    await asyncio.to_thread(upgrade, url)
