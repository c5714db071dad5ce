"""Retention of the record history (consumers/jobs/history.py), on SQLite and on PostgreSQL: entries older than
BCSYNC_HISTORY_DAYS go in batches, newer ones stay; two workers pruning at once delete each entry once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.jobs.history import HistoryPruneJob
from schemas.vocabulary import Decision, Result, Side
from service.settings import Settings
from service.store import history
from service.store.db import Database
from service.store.migrate import upgrade_async
from service.store.models import RecordHistory


def aged(days: float, record_id: str = "r1") -> RecordHistory:
    row = history.entry(mapping="CUSTOMER", side=Side.BC, record_id=record_id, bc_id=None, dataverse_id=None,
                        kind="live", result=Result.UNCHANGED, decision=Decision.ECHO, reason=None, events=[],
                        changes=[], sensitive=(), correlation_id=None, duration_ms=1, label=None, terms=())
    row.at = datetime.now(UTC) - timedelta(days=days)
    return row


async def fresh(url: str, *rows: RecordHistory) -> Database:
    await upgrade_async(url)
    db = Database(url)
    async with db.session() as session:
        session.add_all(rows)
    return db


async def left(db: Database, record_id: str = "r1") -> list[RecordHistory]:
    async with db.session() as session:
        return await history.for_pair(session, "CUSTOMER", [record_id], limit=1000, before_id=None)


async def test_entries_older_than_the_retention_go_in_batches_newer_ones_stay(database_url: str) -> None:
    db = await fresh(database_url, *(aged(31 + i) for i in range(7)), aged(29.9), aged(0.5), aged(0))
    job = HistoryPruneJob(db, days=30, batch=3)
    await job.tick()  # 3 + 3 + 1: loops until a batch comes back short
    kept = await left(db)
    assert len(kept) == 3 and all(r.at.replace(tzinfo=UTC) > datetime.now(UTC) - timedelta(days=30) for r in kept)
    async with db.session() as session:
        session.add(aged(40))
    await job.tick()  # not due yet: every 10 minutes
    assert len(await left(db)) == 4
    job.next_run = 0.0
    await job.tick()
    assert len(await left(db)) == 3
    assert await HistoryPruneJob(db, days=1).prune() == 1  # the 29.9-day-old one; a 1-day retention keeps today's
    await db.close()


async def test_two_workers_pruning_at_once_delete_each_entry_once(database_url: str) -> None:
    db = await fresh(database_url, *(aged(31 + i / 100, f"r{i % 3}") for i in range(600)), aged(2, "r0"))
    deleted = await asyncio.gather(HistoryPruneJob(db, 30, batch=50).prune(), HistoryPruneJob(db, 30, batch=50).prune())
    assert sum(deleted) == 600
    assert [len(await left(db, f"r{i}")) for i in range(3)] == [1, 0, 0]
    await db.close()


def test_the_retention_settings_are_bounded(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.history_days, settings.history_value_chars) == (30, 500)
    monkeypatch.setenv("BCSYNC_HISTORY_DAYS", "7")
    monkeypatch.setenv("BCSYNC_HISTORY_VALUE_CHARS", "2000")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.history_days, settings.history_value_chars) == (7, 2000)
    for name, value in (("BCSYNC_HISTORY_DAYS", "0"), ("BCSYNC_HISTORY_VALUE_CHARS", "5"),
                        ("BCSYNC_HISTORY_VALUE_CHARS", "100000")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError):
            Settings(_env_file=None)  # type: ignore[call-arg]
        monkeypatch.delenv(name)


def test_every_workers_job_runner_prunes_with_the_configured_retention() -> None:
    from types import SimpleNamespace

    from consumers.jobs.runner import JobRunner  # the engine's module: imported here, not by the tests above
    from consumers.jobs.settings import JobSettings

    nothing: Any = SimpleNamespace()
    runner = JobRunner(Settings(_env_file=None, history_days=7), nothing, nothing, nothing, nothing, nothing,  # type: ignore[call-arg]
                       JobSettings(_env_file=None))  # type: ignore[call-arg]
    assert isinstance(runner.history, HistoryPruneJob) and runner.history.days == 7 and "history" in runner.wakes
    assert (runner.history.every_seconds, runner.history.batch) == (600.0, 5000)
