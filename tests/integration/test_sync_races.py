"""Races between the run that creates a record and the notification of that very create."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumers.errors import RecordBusy
from consumers.lease import Lease
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME
from service.store import couplings
from tests.integration.sync_world import World


async def until_applied(w: World, source: str, mapping: str, entity: str, record_id: str) -> None:
    """Deliver one event as the worker does: a busy record comes back shortly."""
    deliver = w.bc_event if source == "bc" else w.dv_event
    for _ in range(100):
        try:
            await deliver(mapping, entity, record_id, "updated")
            return
        except RecordBusy:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{mapping} {record_id} stayed busy")


async def test_the_notification_of_our_own_create_ahead_of_its_coupling_overwrites_nothing(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """BC notifies the customer we created before our run saved the coupling (BC answered slowly), and the
    salesperson edits the account meanwhile: the notification must not couple by match and write BC's older
    values over the account; the edit reaches BC."""
    account = await world.human.dv_create("accounts", {"name": "Race Ltd", "customertypecode": 3,
                                                        "telephone1": "+1 206 555 0100"})
    account_id = account["accountid"]
    rule = world.engine.rules["CUSTOMER"]
    create = rule.create
    notified: list[asyncio.Task[None]] = []

    async def slow_create(toward: str, payload: dict[str, Any]) -> dict[str, Any]:
        created = await create(toward, payload)
        if toward == "bc":  # BC has the customer; our answer is late, and meanwhile…
            await world.human.dv_update("accounts", account_id, {"telephone1": "+1 206 555 0199"})
            notified.append(asyncio.create_task(
                until_applied(world, "bc", "CUSTOMER", "customers", created["id"])))
            await asyncio.sleep(0.5)  # …BC's notification of it is being handled
        return created

    monkeypatch.setattr(rule, "create", slow_create)
    await world.dv_event("CUSTOMER", "account", account_id, "created")
    await asyncio.gather(*notified)
    monkeypatch.setattr(rule, "create", create)
    await until_applied(world, "dv", "CUSTOMER", "account", account_id)  # the edit's own notification

    row = await world.human.dv_get("accounts", account_id)
    assert row is not None and row["telephone1"] == "+1 206 555 0199", "the salesperson's edit was overwritten"
    [customer] = await world.human.bc_find("customers", "displayName eq 'Race Ltd'")
    assert customer["phoneNumber"] == "+1 206 555 0199"
    async with world.db.session() as session:
        coupling = await couplings.find(session, "CUSTOMER", "dataverse", account_id)
    assert coupling is not None and coupling.bc_id == customer["id"].lower()


async def test_both_sides_of_a_coupled_pair_at_once_do_not_wait_for_each_other(world: World) -> None:
    """A catch-up (or a change and an echo) brings a customer and its account at the same moment: neither run may
    hold its own record while waiting for the other's (each would wait for the other until both give up, and
    again at every retry)."""
    customer = await world.human.bc_create("customers", {"displayName": "Pair Ltd"})
    await world.bc_event("CUSTOMER", "customers", customer["id"], "created")
    async with world.db.session() as session:
        coupling = await couplings.find(session, "CUSTOMER", "bc", customer["id"])
    assert coupling is not None
    await world.human.bc_update("customers", customer["id"], {"phoneNumber": "+1 425 555 0142"})
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(asyncio.gather(
        until_applied(world, "bc", "CUSTOMER", "customers", customer["id"]),
        until_applied(world, "dv", "CUSTOMER", "account", coupling.dataverse_id)), timeout=20)
    assert asyncio.get_running_loop().time() - started < 10
    row = await world.human.dv_get("accounts", coupling.dataverse_id)
    assert row is not None and row["telephone1"] == "+1 425 555 0142"


async def test_a_match_coupled_by_another_run_meanwhile_is_not_taken_over(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Account A matches customer C by name; after A's run found C free, another run couples C to account B. A's
    run must not overwrite that coupling: it runs again, sees C taken, and gets a customer of its own."""
    customer = await world.human.bc_create("customers", {"displayName": "Twin Ltd"})
    account_a = (await world.human.dv_create("accounts", {"name": "Twin Ltd", "customertypecode": 3}))["accountid"]
    account_b = (await world.human.dv_create("accounts", {"name": "Other Ltd", "customertypecode": 3}))["accountid"]
    add = Lease.add

    async def lose_the_match_first(lease: Lease, keys: Any, what: str, **kwargs: Any) -> Any:
        if not kwargs.get("wait", True):  # A's run leases its match: another run coupled C to B just before
            async with world.db.session() as session:
                await couplings.save(session, "CUSTOMER", customer["id"], account_b)
            monkeypatch.setattr(Lease, "add", add)
        return await add(lease, keys, what, **kwargs)

    monkeypatch.setattr(Lease, "add", lose_the_match_first)
    await world.dv_event("CUSTOMER", "account", account_a, "created")
    async with world.db.session() as session:
        of_c = await couplings.find(session, "CUSTOMER", "bc", customer["id"])
        of_a = await couplings.find(session, "CUSTOMER", "dataverse", account_a)
    assert of_c is not None and of_c.dataverse_id == account_b.lower(), "A's run took over C's coupling"
    assert of_a is not None and of_a.bc_id != customer["id"].lower()


async def test_a_change_made_while_the_record_is_created_is_applied_again_not_counted_as_synchronized(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person renames the new product while its create run is still working on it (making it Active, pricing
    it) and the rule reads it back after that: the coupling keeps what we wrote, and the rename is applied
    again after the run — it must not count as synchronized and get lost."""
    await world.human.bc_create("unitsOfMeasure", {"code": "PCS", "displayName": "Piece"})
    item = await world.human.bc_create("items", {"displayName": "Bike helmet", "unitPrice": 49.5,
                                                  "baseUnitOfMeasureCode": "PCS"})
    rule = world.engine.rules["ITEM-PRODUCT"]
    create = rule.create
    follow_ups: list[tuple[str, str]] = []

    async def create_then_renamed(toward: str, payload: dict[str, Any]) -> dict[str, Any]:
        created = await create(toward, payload)
        await world.human.dv_update("products", created["productid"], {"name": "Bike helmet Pro"})
        return await world.ctx.dv.get("products", created["productid"]) or created

    async def redrive(mapping: str, event: str) -> None:
        follow_ups.append((mapping, event))

    monkeypatch.setattr(rule, "create", create_then_renamed)
    world.engine.redrive = redrive
    await world.bc_event("ITEM-PRODUCT", "items", item["id"], "created")
    assert [mapping for mapping, _ in follow_ups] == ["ITEM-PRODUCT"]
    event = ChangeEvent.model_validate_json(follow_ups[0][1])
    assert (event.source, event.entity) == ("dataverse", "product")
    await world.engine.handle(BY_NAME["ITEM-PRODUCT"], event)
    assert (await world.human.bc_get("items", item["id"]))["displayName"] == "Bike helmet Pro"
