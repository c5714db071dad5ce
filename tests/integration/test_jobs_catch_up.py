"""Catch-up in-process: changed records since the watermark become outbox events (deduplicated within
the overlap), watermarks per side, the periodic full reconcile, the per-mapping interval."""

from __future__ import annotations

import json
from datetime import UTC

from sqlalchemy import select

from consumers.jobs.catchup import CatchUpJob
from consumers.jobs.settings import JobSettings
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME
from service.settings import Settings
from service.store import jobs
from service.store.models import MappingConfig, OutboxEvent
from service.store.outbox import utcnow
from tests.integration.sync_world import World
from tests.integration.test_sync_documents import account, bc_items, bc_post, coupled, sales_order


def catch_up(world: World, **values: object) -> CatchUpJob:
    return CatchUpJob(world.db, world.engine, Settings(_env_file=None, reconcile_minutes=30),
                      JobSettings(_env_file=None, **values))  # type: ignore[arg-type]


async def outbox_events(world: World) -> list[dict]:
    async with world.db.session() as session:
        rows = (await session.execute(select(OutboxEvent).order_by(OutboxEvent.id))).scalars()  # type: ignore[arg-type]
        return [json.loads(r.payload) for r in rows]


async def test_changes_since_the_watermark_become_events_once(world: World) -> None:
    customer = await world.human.bc_create("customers", {"displayName": "Watermark Ltd"})
    await world.bc_event("CUSTOMER", "customers", customer["id"])  # coupled now
    await world.human.bc_update("customers", customer["id"], {"phoneNumber": "+1 425 555 0142"})
    job = catch_up(world, full_reconcile_every=3)

    published = await job.run_mapping("CUSTOMER")
    events = await outbox_events(world)
    # The BC change only: our own write to Sales is listed too, but it is the version its coupling holds (the
    # ETag kept from our write's answer), so no event (before issue 16 it was published and read to no effect).
    assert published == len(events) == 1
    bc_events = [e for e in events if e["source"] == "business_central"]
    assert [(e["record_id"], e["change_type"]) for e in bc_events] == [(customer["id"], "updated")]
    assert bc_events[0]["dedupe_key"].startswith(f"catchup:CUSTOMER:bc:{customer['id']}:")
    async with world.db.session() as session:
        state = await jobs.catch_up_state(session, "CUSTOMER")
        assert state.runs == 1 and state.bc_watermark is not None and state.last_error is None
        assert state.next_run_at is not None and state.next_run_at.replace(tzinfo=UTC) > utcnow()

    # Read again within the overlap by the next run: published again, as this run's own events (issue 13: an
    # earlier run's event may have been dead-lettered; a duplicate of it would leave the record unsynchronized).
    assert await job.run_mapping("CUSTOMER") == 1
    again = (await outbox_events(world))[1:]
    assert {e["record_id"] for e in again} == {e["record_id"] for e in events}
    assert not {e["dedupe_key"] for e in again} & {e["dedupe_key"] for e in events}
    for event in again:
        await world.engine.handle(BY_NAME["CUSTOMER"], ChangeEvent.model_validate(event))
    # The third run also reconciles everything (hidden deletes), on both sides of a two-way mapping; the two
    # record versions still in the overlap are the ones their couplings hold (same ETags): none is published.
    assert await job.run_mapping("CUSTOMER") == 0
    full = [e for e in await outbox_events(world) if e["change_type"] == "collection"]
    assert sorted(e["source"] for e in full) == ["business_central", "dataverse"]
    assert all(e["full_reconcile"] and e["collection_filter"] is None for e in full)


async def test_dataverse_changes_and_one_way_mappings(world: World) -> None:
    account = await world.human.dv_create("accounts", {"name": "From Sales Ltd", "customertypecode": 3})
    await world.dv_event("CUSTOMER", "account", account["accountid"])
    await world.human.dv_update("accounts", account["accountid"], {"telephone1": "+44 20 7946 0001"})
    job = catch_up(world)
    assert await job.run_mapping("CUSTOMER") >= 1
    sources = {(e["source"], e["record_id"]) for e in await outbox_events(world)}
    assert ("dataverse", account["accountid"]) in sources
    # CURRENCY only flows BC → Sales: its catch-up reads BC alone.
    await job.run_mapping("CURRENCY")
    assert not [e for e in await outbox_events(world) if e["entity"] == "transactioncurrency"]


async def test_schedule_follows_the_mapping_setting(world: World) -> None:
    assert jobs.reconcile_minutes({"reconcile_minutes": 0}, 30) == 0
    assert jobs.reconcile_minutes({"reconcile_minutes": 2.5}, 30) == 2.5
    assert jobs.reconcile_minutes({"reconcile_minutes": "soon"}, 30) == 30
    assert jobs.reconcile_minutes({}, 30) == 30
    async with world.db.session() as session:
        for name in jobs.catch_up_mappings():
            session.add(MappingConfig(mapping=name, config=json.dumps({"reconcile_minutes": 0}), updated_at=utcnow()))
    job = catch_up(world)
    await job.tick()  # every mapping is off: nothing runs
    async with world.db.session() as session:
        assert not await jobs.catch_up_states(session)
        await jobs.request_catch_up(session, ["UNITOFMEASURE"])
    await job.tick()  # a request runs even when the schedule is off
    async with world.db.session() as session:
        states = await jobs.catch_up_states(session)
    assert states["UNITOFMEASURE"].runs == 1 and states["UNITOFMEASURE"].requested_at is None
    assert states["UNITOFMEASURE"].next_run_at is None


async def apply_published(world: World, job: CatchUpJob, mapping: str) -> int:
    """Run the mapping's catch-up and apply what it published, as a worker would."""
    before = len(await outbox_events(world))
    assert await job.run_mapping(mapping) is not None
    events = (await outbox_events(world))[before:]
    for event in events:
        await world.engine.handle(BY_NAME[mapping], ChangeEvent.model_validate(event))
    return len(events)


async def test_documents_whose_notifications_were_lost_are_caught_up(world: World) -> None:
    """No webhook at all: the submitted order, BC's shipment and the posted invoice all arrive by catch-up."""
    items = await bc_items(world, sync=True)
    account_id = await account(world, sync=True)
    order_id, _ = await sales_order(world, account_id, items)
    job = catch_up(world, catch_up_overlap_seconds=5)
    assert await apply_published(world, job, "SALESORDER-ORDER") >= 1
    bc_id = await coupled(world, "SALESORDER-ORDER", "dataverse", order_id)

    await bc_post(world, f"/salesOrders/{bc_id}/ship")
    await apply_published(world, job, "SALESORDER-ORDER")
    row = await world.human.dv_get("salesorders", order_id)
    assert row is not None and (row["statecode"], row["statuscode"]) == (3, 100001)  # Fulfilled

    await bc_post(world, f"/salesOrders/{bc_id}/post")
    [invoice] = await world.human.bc_find("salesInvoices", f"orderId eq {bc_id}")
    assert await apply_published(world, job, "POSTEDSALESINV-INV") == 1
    [sales_invoice] = await world.human.dv_find("invoices", f"invoicenumber eq '{invoice['number']}'")
    assert sales_invoice["_salesorderid_value"] == order_id
    assert (await world.human.dv_get("salesorders", order_id) or {}).get("statecode") == 4  # Invoiced
