"""Record leases (consumers/lease.py): renewed while a run lasts, free soon after a worker died."""

from __future__ import annotations

import asyncio

import pytest

from consumers import lease as lease_module
from consumers.errors import RecordBusy
from consumers.lease import Lease
from service.store.db import Database
from service.store.migrate import upgrade_async


@pytest.fixture
async def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setattr(lease_module, "LEASE_SECONDS", 0.4)
    monkeypatch.setattr(lease_module, "LOCK_TRIES", 2)
    await upgrade_async(database_url)
    database = Database(database_url)
    yield database  # type: ignore[misc]
    await database.close()


async def test_a_long_run_keeps_its_record_and_a_dead_runs_record_frees_itself(db: Database) -> None:
    long_run = Lease(db)
    await long_run.add(["CUSTOMER:bc:1"], "customer 1")
    await asyncio.sleep(1.0)  # more than twice the lease: only renewal keeps it
    with pytest.raises(RecordBusy, match="customer 1"):
        await Lease(db).add(["CUSTOMER:bc:1"], "customer 1")
    await long_run.release()
    other = Lease(db)
    await other.add(["CUSTOMER:bc:1"], "customer 1")  # given back: free at once
    await other.release()

    dead = Lease(db)
    await dead.add(["CUSTOMER:bc:2", "CUSTOMER:dataverse:2"], "customer 2")
    assert dead._renewal is not None
    dead._renewal.cancel()  # the worker died: nobody renews, nobody releases
    with pytest.raises(RecordBusy):
        await Lease(db).add(["CUSTOMER:dataverse:2"], "account 2")
    await asyncio.sleep(0.5)
    survivor = Lease(db)
    await survivor.add(["CUSTOMER:dataverse:2", "CUSTOMER:bc:2"], "account 2")  # ran out by itself
    assert survivor.keys == ["CUSTOMER:bc:2", "CUSTOMER:dataverse:2"]
    await survivor.release()
