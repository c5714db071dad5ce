"""Conflict and delete policies, and no duplicate creation when two engines race for one record."""

import asyncio

import pytest

from consumers.errors import Conflict, RecordBusy
from consumers.sync import SyncEngine
from schemas.mappings import ConflictPolicy, DeletePolicy
from service.store import couplings, synclog
from tests.integration.sync_world import World


async def coupled_pair(w: World, name: str) -> tuple[str, str]:
    customer = await w.human.bc_create("customers", {"displayName": name})
    await w.bc_event("CUSTOMER", "customers", customer["id"], "created")
    async with w.db.session() as session:
        coupling = await couplings.find(session, "CUSTOMER", "bc", customer["id"])
    assert coupling is not None
    return customer["id"], coupling.dataverse_id


async def both_changed(w: World, bc_id: str, account_id: str, dv_last: bool = True) -> None:
    """The name changes on both sides between two synchronizations (Sales last unless told otherwise)."""
    if dv_last:
        await w.human.bc_update("customers", bc_id, {"displayName": "Name from BC"})
        await asyncio.sleep(1.1)  # Dataverse keeps whole seconds
        await w.human.dv_update("accounts", account_id, {"name": "Name from Sales"})
    else:
        await w.human.dv_update("accounts", account_id, {"name": "Name from Sales"})
        await asyncio.sleep(1.1)
        await w.human.bc_update("customers", bc_id, {"displayName": "Name from BC"})


async def names(w: World, bc_id: str, account_id: str) -> tuple[str, str]:
    return (await w.human.bc_get("customers", bc_id))["displayName"], (await w.human.dv_get("accounts", account_id))["name"]


@pytest.mark.parametrize(("policy", "dv_last", "expected"), [
    (ConflictPolicy.SEND, True, "Name from BC"),
    (ConflictPolicy.GET, False, "Name from Sales"),
    (ConflictPolicy.LATEST, True, "Name from Sales"),
    (ConflictPolicy.LATEST, False, "Name from BC"),
])
async def test_a_field_changed_on_both_sides_is_resolved_by_the_policy(world: World, policy, dv_last, expected) -> None:
    world.set_policy("CUSTOMER", conflict_policy=policy)
    bc_id, account_id = await coupled_pair(world, "Conflicted Ltd")
    await both_changed(world, bc_id, account_id, dv_last)
    await world.bc_event("CUSTOMER", "customers", bc_id)  # the BC notification is processed first
    await world.dv_event("CUSTOMER", "account", account_id)  # then Sales' webhook
    assert await names(world, bc_id, account_id) == (expected, expected)
    # settled: both sides' next events are unchanged
    assert (await world.engine.sync_record(world.engine.rules["CUSTOMER"], "bc", bc_id)).result == "unchanged"
    assert (await world.engine.sync_record(world.engine.rules["CUSTOMER"], "dataverse", account_id)).result == "unchanged"


async def test_policy_none_lists_the_conflict_and_changes_nothing(world: World) -> None:
    world.set_policy("CUSTOMER", conflict_policy=ConflictPolicy.NONE)
    bc_id, account_id = await coupled_pair(world, "Undecided Ltd")
    await both_changed(world, bc_id, account_id)
    with pytest.raises(Conflict):
        await world.bc_event("CUSTOMER", "customers", bc_id)
    assert await names(world, bc_id, account_id) == ("Name from BC", "Name from Sales")
    async with world.db.session() as session:
        [error] = await synclog.open_errors(session, "CUSTOMER")
    assert "Name from BC" in error.message and "Name from Sales" in error.message


async def test_delete_policy_propagate_deletes_the_other_side(world: World) -> None:
    world.set_policy("CUSTOMER", delete_policy=DeletePolicy.PROPAGATE)
    bc_id, account_id = await coupled_pair(world, "Gone Ltd")
    await world.human.dv_delete("accounts", account_id)
    await world.dv_event("CUSTOMER", "account", account_id, "deleted")
    assert await world.human.bc_get("customers", bc_id) is None


async def test_delete_policy_restore_recreates_the_record(world: World) -> None:
    world.set_policy("CUSTOMER", delete_policy=DeletePolicy.RESTORE)
    bc_id, account_id = await coupled_pair(world, "Phoenix Ltd")
    await world.human.bc_delete("customers", bc_id)
    await world.bc_event("CUSTOMER", "customers", bc_id, "deleted")
    async with world.db.session() as session:
        coupling = await couplings.find(session, "CUSTOMER", "dataverse", account_id)
    assert coupling is not None and coupling.bc_id != bc_id
    assert (await world.human.bc_get("customers", coupling.bc_id))["displayName"] == "Phoenix Ltd"


async def test_two_engines_racing_for_one_new_record_create_it_once(world: World) -> None:
    account = await world.human.dv_create("accounts", {"name": "Raced Ltd", "customertypecode": 3})
    second = SyncEngine(world.ctx)
    outcomes = await asyncio.gather(
        *(engine.sync_record(engine.rules["CUSTOMER"], "dataverse", account["accountid"])
          for engine in (world.engine, second, world.engine, second)),
        return_exceptions=True)
    assert sum(1 for o in outcomes if not isinstance(o, BaseException) and o.result == "inserted") == 1
    assert all(isinstance(o, RecordBusy) or not isinstance(o, BaseException) for o in outcomes)
    # the ones that found the record busy are retried later: unchanged
    assert (await second.sync_record(second.rules["CUSTOMER"], "dataverse", account["accountid"])).result == "unchanged"
    assert len(await world.human.bc_find("customers", "displayName eq 'Raced Ltd'")) == 1


async def test_a_record_found_busy_leaves_no_lease_behind(world: World) -> None:
    from sqlalchemy import select

    from service.store import locks
    from service.store.models import RecordLock

    bc_id, account_id = await coupled_pair(world, "Leased Ltd")
    async with world.db.session() as session:  # another worker holds the Sales side of the pair
        assert await locks.acquire(session, [f"CUSTOMER:dataverse:{account_id}"], "someone-else", 60)
    with pytest.raises(RecordBusy):
        await world.engine.sync_record(world.engine.rules["CUSTOMER"], "bc", bc_id)
    async with world.db.session() as session:
        held = [row.key for row in (await session.execute(select(RecordLock))).scalars()]
    assert held == [f"CUSTOMER:dataverse:{account_id}"]  # the BC side's key was given back
