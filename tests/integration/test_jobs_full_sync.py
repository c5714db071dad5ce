"""Full synchronization in-process (sandbox + connectors + engine + the worker's FullSync job, no broker):
dependency order, no duplicates when data exists on both sides, restart of a line in Error."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from consumers.jobs.fullsync import FullSync
from consumers.jobs.settings import JobSettings
from sandbox.dataverse.identity import DEFAULT_UNIT_GROUP_ID, DEFAULT_UNIT_ID
from schemas.vocabulary import Side
from service.connectors.http import ApiError
from service.store import couplings, jobs, synclog
from service.store.db import Database
from tests.integration.sync_world import World


async def no_kick(_: str) -> None:
    return None


def full_sync(world: World, **settings: Any) -> FullSync:
    values: dict[str, Any] = {"jobs_poll_seconds": 0.2, "full_sync_lines": 3, **settings}
    return FullSync(world.db, world.engine, JobSettings(_env_file=None, **values), no_kick)


async def run_until_done(runner: FullSync, db: Database, timeout: float = 160.0) -> list[Any]:
    """Tick like the worker's loop until the latest run has no line Ready or In Progress left to run."""
    deadline = time.monotonic() + timeout
    while True:
        await runner.tick()
        if runner.running:
            await asyncio.wait(list(runner.running.values()), return_when=asyncio.FIRST_COMPLETED)
            continue
        async with db.session() as session:
            run = await jobs.latest_run(session)
            assert run is not None and run.id is not None
            lines = await jobs.run_lines(session, run.id)
        if jobs.run_status(lines) != jobs.IN_PROGRESS:
            return lines
        assert time.monotonic() < deadline, [(x.mapping, x.status) for x in lines]
        await asyncio.sleep(0.05)


async def start(db: Database, mappings: list[str] | None = None) -> None:
    async with db.session() as session:
        await jobs.create_run(session, mappings or jobs.full_sync_mappings(), {})


def when(value: datetime | None) -> datetime:
    assert value is not None
    return value


async def all_rows(world: World, entity_set: str) -> list[dict[str, Any]]:
    return [r async for r in world.ctx.dv.list(entity_set)]


@pytest.mark.timeout(300)
async def test_full_sync_couples_existing_creates_the_rest_in_dependency_order(world: World) -> None:
    human = world.human
    assert (await human.bc.post("/seed", json={"customers": 300, "items": 300, "salespeople": 0,
                                               "contactsPerCustomer": 0})).status_code == 200
    assert (await human.dv.post("/seed", json={"users": 2})).status_code == 200
    customers = [c async for c in world.ctx.bc.list("customers")]
    # Seeded names repeat ("Contoso Ltd" twice); CUSTOMER matches by number, then by name: make names unique.
    for chunk in range(0, len(customers), 50):
        await asyncio.gather(*(human.bc_update("customers", c["id"], {"displayName": f"{c['displayName']} {c['number']}"})
                               for c in customers[chunk:chunk + 50]))
    customers = [c async for c in world.ctx.bc.list("customers")]
    items = [i async for i in world.ctx.bc.list("items")]
    assert len(customers) == 300 and len(items) == 300
    # 100 customers and 100 items already exist in Sales (the same numbers): they must be coupled, not copied.
    for customer in customers[:100]:
        await human.dv_create("accounts", {"name": customer["displayName"], "accountnumber": customer["number"],
                                           "customertypecode": 3})
    for item in items[:100]:
        await human.dv_create("products", {
            "name": item["displayName"], "productnumber": item["number"],
            "defaultuomscheduleid@odata.bind": f"/uomschedules({DEFAULT_UNIT_GROUP_ID})",
            "defaultuomid@odata.bind": f"/uoms({DEFAULT_UNIT_ID})"})

    await start(world.db)
    lines = {x.mapping: x for x in await run_until_done(full_sync(world), world.db)}

    assert all(x.status == jobs.FINISHED for x in lines.values()), {m: (x.status, x.message) for m, x in lines.items()}
    async with world.db.session() as session:
        errors = Counter(f"{e.mapping} {e.source}: {e.message[:300]}" for e in await synclog.open_errors(session))
    assert not errors, [(k[:400], n) for k, n in errors.most_common(6)]
    assert lines["CUSTOMER"].coupled == 100 and lines["CUSTOMER"].inserted == 200, lines["CUSTOMER"]
    assert lines["CUSTOMER"].failed == 0 and lines["ITEM-PRODUCT"].failed == 0
    assert lines["ITEM-PRODUCT"].coupled == 100 and lines["ITEM-PRODUCT"].inserted == 200, lines["ITEM-PRODUCT"]
    # dependency order, visible in the timestamps
    assert when(lines["UNITOFMEASURE"].finished_at) <= when(lines["ITEM-PRODUCT"].started_at)
    assert when(lines["CURRENCY"].finished_at) <= when(lines["ITEM-PRODUCT"].started_at)
    assert when(lines["SALESPEOPLE"].finished_at) <= when(lines["CUSTOMER"].started_at)
    assert when(lines["CURRENCY"].finished_at) <= when(lines["CUSTOMER"].started_at)
    assert when(lines["CUSTOMER"].finished_at) <= when(lines["CONTACT"].started_at)
    # no duplicate: one account per customer number, one product per item number; everything coupled
    accounts = Counter(a.get("accountnumber") for a in await all_rows(world, "accounts"))
    assert all(accounts[c["number"]] == 1 for c in customers), [n for n, k in accounts.items() if k > 1]
    products = Counter(p.get("productnumber") for p in await all_rows(world, "products"))
    assert all(products[i["number"]] == 1 for i in items)
    async with world.db.session() as session:
        assert await jobs.count_couplings(session, "CUSTOMER") == 300
        assert await jobs.count_couplings(session, "ITEM-PRODUCT") == 300
        run = await jobs.latest_run(session)
        assert run is not None and run.finished_at is not None

    # A second run changes nothing: every coupled record is unchanged (CUSTOMER reads both sides).
    await start(world.db, ["CUSTOMER", "ITEM-PRODUCT"])
    again = {x.mapping: x for x in await run_until_done(full_sync(world), world.db)}
    assert again["CUSTOMER"].unchanged == 600 and again["CUSTOMER"].inserted == 0, again["CUSTOMER"]
    assert again["ITEM-PRODUCT"].unchanged == 300 and again["ITEM-PRODUCT"].inserted == 0


@pytest.mark.timeout(300)
async def test_full_sync_matches_in_memory_as_the_server_would_per_record(world: World) -> None:
    """The line reads both sides by pages and matches in memory: no `$filter` query per record, and the same
    decisions as per record — number without case, ambiguity left to a person, a record coupled to another one
    not taken."""
    human = world.human
    assert (await human.bc.post("/seed", json={"customers": 40, "items": 0, "salespeople": 0,
                                               "contactsPerCustomer": 0})).status_code == 200
    customers = [c async for c in world.ctx.bc.list("customers")]
    for customer in customers:  # unique names: the seed repeats some
        await human.bc_update("customers", customer["id"], {"displayName": f"{customer['displayName']} {customer['number']}"})
    customers = [c async for c in world.ctx.bc.list("customers")]
    by_number, ambiguous, taken = customers[0], customers[1], customers[2]
    # customertypecode 1 (not a customer) keeps these out of the Sales side's own pass; matching still sees them
    match = await human.dv_create("accounts", {"name": "Known by its number", "accountnumber": by_number["number"].lower(),
                                               "customertypecode": 3})
    for name in (ambiguous["displayName"], ambiguous["displayName"].upper()):
        await human.dv_create("accounts", {"name": name, "customertypecode": 1})
    other = await human.dv_create("accounts", {"name": "Coupled elsewhere", "accountnumber": taken["number"],
                                               "customertypecode": 1})
    async with world.db.session() as session:
        await couplings.save(session, "CUSTOMER", "00000000-0000-0000-0000-00000000beef", other["accountid"])
    await human.dv.delete("/requests")

    await start(world.db, ["SALESPEOPLE", "CURRENCY", "CUSTOMER"])
    lines = {x.mapping: x for x in await run_until_done(full_sync(world), world.db)}

    line = lines["CUSTOMER"]
    assert line.status == jobs.FINISHED and line.coupled == 1 and line.failed == 1, line
    async with world.db.session() as session:
        coupled = await couplings.find(session, "CUSTOMER", Side.BC, by_number["id"])
        assert coupled is not None and coupled.dataverse_id == match["accountid"].lower()
        assert await couplings.find(session, "CUSTOMER", Side.BC, ambiguous["id"]) is None
        new = await couplings.find(session, "CUSTOMER", Side.BC, taken["id"])
        assert new is not None and new.dataverse_id != other["accountid"].lower()  # created: the match was taken
        errors = await synclog.open_errors(session, "CUSTOMER")
    assert [e.source_id for e in errors] == [ambiguous["id"].lower()]
    assert "2 records on the other side match this one; couple it by hand" in errors[0].message
    reads = (await human.dv.get("/requests", params={"path_contains": "/accounts"})).json()["value"]
    queries = [r for r in reads if r["method"] == "GET" and "filter" in r["query"]]
    assert not queries, queries[:3]  # no query per record: the accounts were listed, by pages of 5,000
    listings = [r for r in reads if r["method"] == "GET" and "(" not in r["path"].rsplit("/", 1)[-1]]
    assert listings and all(r["prefer"] == "odata.maxpagesize=5000" for r in listings), listings


async def test_a_line_in_error_blocks_its_dependents_and_finishes_after_a_restart(world: World,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await world.human.bc.post("/seed", json={"customers": 0, "items": 30, "salespeople": 0})).status_code == 200
    rule = world.engine.rules["UNITOFMEASURE"]
    original = rule.records
    failing = {"on": True}

    async def records(side: str, filter_: str | None = None) -> Any:
        if failing["on"]:
            raise RuntimeError("Business Central is unreachable")
        return await original(side, filter_)

    monkeypatch.setattr(rule, "records", records)
    await start(world.db, ["CURRENCY", "UNITOFMEASURE", "ITEM-PRODUCT"])
    lines = {x.mapping: x for x in await run_until_done(full_sync(world), world.db)}
    assert lines["UNITOFMEASURE"].status == jobs.ERROR and "unreachable" in (lines["UNITOFMEASURE"].message or "")
    assert lines["ITEM-PRODUCT"].status == jobs.READY  # waits for its dependency
    assert jobs.run_status(list(lines.values())) == jobs.ERROR
    assert jobs.blocked(list(lines.values())) == {"ITEM-PRODUCT"}

    failing["on"] = False
    async with world.db.session() as session:
        line = lines["UNITOFMEASURE"]
        await session.merge(line)
        fresh = await session.get(type(line), line.id)
        assert fresh is not None
        await jobs.restart_line(session, fresh)
    lines = {x.mapping: x for x in await run_until_done(full_sync(world), world.db)}
    assert all(x.status == jobs.FINISHED for x in lines.values()), {m: (x.status, x.message) for m, x in lines.items()}
    assert lines["ITEM-PRODUCT"].inserted == 30
    assert lines["UNITOFMEASURE"].attempt == 2


async def test_a_restarted_line_stops_the_worker_that_ran_it(world: World) -> None:
    assert (await world.human.bc.post("/seed", json={"customers": 0, "items": 0, "salespeople": 0})).status_code == 200
    await start(world.db, ["CURRENCY"])
    async with world.db.session() as session:
        run = await jobs.latest_run(session)
        assert run is not None and run.id is not None
        (line,) = await jobs.run_lines(session, run.id)
        assert line.id is not None
        attempt = await jobs.claim_line(session, line.id, "worker-a", 0.01)
        assert attempt == 1
    await asyncio.sleep(0.05)
    async with world.db.session() as session:
        (line,) = await jobs.run_lines(session, run.id)
        assert jobs.stuck(line)  # its worker stopped renewing the lease
        assert jobs.run_status([line]) == jobs.IN_PROGRESS
        await jobs.restart_line(session, line)
    async with world.db.session() as session:
        assert line.id is not None
        # worker-a's next page finds the line is no longer its own
        assert not await jobs.progress(session, line.id, "worker-a", 1, Counter(inserted=1), 60)
    lines = await run_until_done(full_sync(world), world.db)
    assert [x.status for x in lines] == [jobs.FINISHED]
    assert lines[0].inserted >= 1  # the currencies of the seed went to Sales


async def test_a_record_failing_on_an_unavailable_service_is_not_skipped_by_full_syncs(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two full synchronizations meeting the same 503 leave the record open (retried); the same 400 skips it."""
    runner, rule = full_sync(world), world.engine.rules["CUSTOMER"]
    failures = {"c-503": ApiError(503, "ServiceUnavailable", "try later", system="BC"),
                "c-400": ApiError(400, "BadRequest", "no such field", system="BC")}

    async def failing(rule: Any, side: str, record_id: str, **_: Any) -> Any:
        raise failures[record_id]

    monkeypatch.setattr(world.engine, "sync_record", failing)
    for run_id in (1, 2):
        for record_id in failures:
            assert await runner._record(rule, "bc", {"id": record_id}, run_id) == "failed"
    async with world.db.session() as session:
        assert not await synclog.is_skipped(session, "CUSTOMER", "business_central", "c-503")
        assert await synclog.is_skipped(session, "CUSTOMER", "business_central", "c-400")
