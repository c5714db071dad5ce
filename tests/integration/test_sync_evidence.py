"""Issue 13, items 1-3: nothing is deleted or decoupled without evidence, and reconciles run as leased jobs.

- A delete notice (Dataverse `Delete`, BC `deleted`) is a claim: the engine reads the source first and applies
  the delete policy only when the record is gone. Whoever holds a webhook secret cannot delete what exists.
- A full reconcile's delete pass considers only couplings older than its listing, and reads each candidate
  again before any delete policy runs.
- A collection notification stores a reconcile job and returns at once; the worker's job runner runs it under
  a lease, with progress; a job whose worker died is taken up again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from consumers.jobs.reconcile import ReconcileJobs
from consumers.jobs.settings import JobSettings
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME, DeletePolicy
from service.store import couplings, reconciles
from service.store.job_models import ReconcileJob
from tests.integration.sync_world import World
from tests.integration.test_sync_conflicts import coupled_pair


async def coupling_of(w: World, side: str, record_id: str) -> Any:
    async with w.db.session() as session:
        return await couplings.find(session, "CUSTOMER", side, record_id)


def collection(filter_: str | None, key: str = "c") -> ChangeEvent:
    return ChangeEvent(source="business_central", entity="customers", record_id=None, change_type="collection",
                       occurred_at=datetime.now(UTC), dedupe_key=f"{key}-{filter_}", correlation_id="c",
                       collection_filter=filter_, full_reconcile=filter_ is None)


# --- item 2: delete notices are verified ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", [DeletePolicy.PROPAGATE, DeletePolicy.REMOVE_COUPLING])
async def test_a_forged_dataverse_delete_of_an_account_that_exists_deletes_and_decouples_nothing(
        world: World, policy: DeletePolicy) -> None:
    world.set_policy("CUSTOMER", delete_policy=policy)
    bc_id, account_id = await coupled_pair(world, "Still Here Ltd")
    await world.dv_event("CUSTOMER", "account", account_id, "deleted")  # the account was not deleted
    assert await world.human.bc_get("customers", bc_id) is not None
    assert await coupling_of(world, "bc", bc_id) is not None
    # and its later edits still arrive (a remove-coupling would have skipped them for good)
    await world.human.dv_update("accounts", account_id, {"name": "Still Here, Renamed"})
    await world.dv_event("CUSTOMER", "account", account_id)
    assert (await world.human.bc_get("customers", bc_id))["displayName"] == "Still Here, Renamed"


async def test_a_forged_bc_deleted_notification_deletes_nothing(world: World) -> None:
    world.set_policy("CUSTOMER", delete_policy=DeletePolicy.PROPAGATE)
    bc_id, account_id = await coupled_pair(world, "Kept By BC Ltd")
    await world.bc_event("CUSTOMER", "customers", bc_id, "deleted")
    assert await world.human.dv_get("accounts", account_id) is not None
    assert await coupling_of(world, "bc", bc_id) is not None


async def test_a_real_delete_still_follows_the_policy(world: World) -> None:
    world.set_policy("CUSTOMER", delete_policy=DeletePolicy.PROPAGATE)
    bc_id, account_id = await coupled_pair(world, "Really Gone Ltd")
    await world.human.bc_delete("customers", bc_id)
    await world.bc_event("CUSTOMER", "customers", bc_id, "deleted")
    assert await world.human.dv_get("accounts", account_id) is None
    assert await coupling_of(world, "bc", bc_id) is None


# --- item 1: a full reconcile deletes only on evidence -----------------------------------------------------


async def test_a_full_reconcile_keeps_records_its_listing_missed_and_couplings_made_while_it_listed(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing misses one existing record (a page that moved under it) and, while it lists, a live event
    couples a new record. Neither is a delete candidate for the policy: the first is read again and found, the
    second is younger than the listing and not even read."""
    world.set_policy("CUSTOMER", delete_policy=DeletePolicy.PROPAGATE)
    rule = world.engine.rules["CUSTOMER"]
    kept_id, _ = await coupled_pair(world, "Listed Ltd")
    missed_id, missed_account = await coupled_pair(world, "Missed By The Listing Ltd")
    gone_id, gone_account = await coupled_pair(world, "Really Deleted Ltd")
    await world.human.bc_delete("customers", gone_id)
    new_ids: list[str] = []
    listing = rule.records

    async def listing_while_records_are_created(side: str, filter_: str | None = None) -> AsyncIterator[Any]:
        async def pages() -> AsyncIterator[dict[str, Any]]:
            async for record in await listing(side, filter_):
                if rule.record_id(side, record) == missed_id:
                    continue
                yield record
                if not new_ids:  # a person creates a customer; its live event couples it meanwhile
                    created = await world.human.bc_create("customers", {"displayName": "Made Meanwhile Ltd"})
                    await world.bc_event("CUSTOMER", "customers", created["id"], "created")
                    new_ids.append(created["id"])
        return pages()

    monkeypatch.setattr(rule, "records", listing_while_records_are_created)
    counts = await world.engine.reconcile(rule, "bc", None, True)

    assert new_ids and await coupling_of(world, "bc", new_ids[0]) is not None
    assert await coupling_of(world, "bc", missed_id) is not None, "a record the listing missed was decoupled"
    assert await world.human.dv_get("accounts", missed_account) is not None
    assert await coupling_of(world, "bc", kept_id) is not None
    # the one really deleted is the only one the policy acted on
    assert await coupling_of(world, "bc", gone_id) is None
    assert await world.human.dv_get("accounts", gone_account) is None
    assert counts.checked == 2, "candidates: the missed and the deleted record, not the one coupled meanwhile"


# --- item 3: reconciles are leased jobs ---------------------------------------------------------------------


def job_runner(world: World, lease_seconds: float = 120.0) -> ReconcileJobs:
    async def kick(_: str) -> None:
        return None

    settings = JobSettings(_env_file=None, line_lease_seconds=lease_seconds)  # type: ignore[call-arg]
    return ReconcileJobs(world.db, world.engine, settings, kick)


async def jobs_of(world: World) -> list[ReconcileJob]:
    async with world.db.session() as session:
        return await reconciles.recent(session, "CUSTOMER")


async def run_jobs(runner: ReconcileJobs) -> None:
    await runner.tick()
    for task in list(runner.running.values()):
        await task


async def test_a_collection_notification_stores_a_job_that_the_job_runner_applies(world: World) -> None:
    kept = await world.human.bc_create("customers", {"displayName": "Kept Ltd"})
    gone = await world.human.bc_create("customers", {"displayName": "Gone Ltd"})
    for record in (kept, gone):
        await world.bc_event("CUSTOMER", "customers", record["id"], "created")
    since = kept["lastModifiedDateTime"]
    fresh = [await world.human.bc_create("customers", {"displayName": f"Bulk {i}"}) for i in range(3)]
    await world.human.bc_delete("customers", gone["id"])

    changed = collection(f"lastModifiedDateTime gt {since}")
    await world.engine.handle(BY_NAME["CUSTOMER"], changed)
    await world.engine.handle(BY_NAME["CUSTOMER"], changed)  # delivered twice: one job
    [job] = await jobs_of(world)
    assert job.status == reconciles.WAITING and job.filter == changed.collection_filter and not job.full
    assert await coupling_of(world, "bc", fresh[0]["id"]) is None, "the delivery only stored the job"

    runner = job_runner(world)
    await run_jobs(runner)
    [job] = await jobs_of(world)
    assert job.status == reconciles.FINISHED and job.listed >= 3
    for record in fresh:
        coupling = await coupling_of(world, "bc", record["id"])
        assert coupling is not None
        assert (await world.human.dv_get("accounts", coupling.dataverse_id))["name"] == record["displayName"]
    assert await coupling_of(world, "bc", gone["id"]) is not None  # a filtered read cannot see deletes

    await world.engine.handle(BY_NAME["CUSTOMER"], collection(None))
    await run_jobs(runner)
    assert [j.status for j in await jobs_of(world)] == [reconciles.FINISHED] * 2
    assert await coupling_of(world, "bc", gone["id"]) is None
    assert await coupling_of(world, "bc", kept["id"]) is not None


async def test_a_job_whose_worker_died_is_taken_up_by_another_and_a_live_lease_is_not(world: World) -> None:
    customer = await world.human.bc_create("customers", {"displayName": "Taken Up Ltd"})
    await world.engine.handle(BY_NAME["CUSTOMER"], collection(None, key="died"))
    async with world.db.session() as session:  # a worker claimed it, then died
        claimed = await reconciles.claim(session, "dead-worker", 120.0, held=())
    assert claimed is not None and claimed.id is not None

    survivor = job_runner(world)
    await run_jobs(survivor)
    [job] = await jobs_of(world)
    assert job.status == reconciles.RUNNING, "taken from a worker whose lease still runs"
    assert await coupling_of(world, "bc", customer["id"]) is None

    async with world.db.session() as session:  # its lease runs out
        await session.execute(update(ReconcileJob).where(ReconcileJob.id == claimed.id)  # type: ignore[arg-type]
                              .values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    await run_jobs(survivor)
    [job] = await jobs_of(world)
    assert job.status == reconciles.FINISHED and job.attempt == 2
    assert await coupling_of(world, "bc", customer["id"]) is not None
    # the dead worker, should it wake up, can no longer report on the job
    async with world.db.session() as session:
        assert not await reconciles.progress(session, claimed.id, "dead-worker", 1, 120.0, listed=1, checked=0,
                                             failed=0)


# --- a listing's copy is not newer than what a live run applied -----------------------------------------------


async def test_a_reconcile_does_not_set_back_a_change_a_live_run_applied_after_the_listing(world: World) -> None:
    """Found by fault case 10: the reconcile listed a customer, a person changed it and its live event was
    applied, then the reconcile reached the record and wrote its older copy over Sales."""
    rule = world.engine.rules["CUSTOMER"]
    created = await world.human.bc_create("customers", {"displayName": "Stale Ltd", "phoneNumber": "+1 000 0001"})
    bc_id = created["id"]
    await world.bc_event("CUSTOMER", "customers", bc_id, "created")
    listed = [r async for r in await rule.records("bc", None) if rule.record_id("bc", r) == bc_id.lower()]
    assert listed and listed[0]["phoneNumber"] == "+1 000 0001"
    await world.human.bc_update("customers", bc_id, {"phoneNumber": "+1 000 0002"})
    await world.bc_event("CUSTOMER", "customers", bc_id)
    await world.engine.sync_record(rule, "bc", bc_id, record=listed[0], kind="reconcile")
    [account] = await world.human.dv_find("accounts", "name eq 'Stale Ltd'")
    assert account["telephone1"] == "+1 000 0002", "the reconcile wrote the listed (older) phone back"
