"""Issue 13, item 7: hold means hold from the moment the API says so. A run checks the hold under its record
lease, and the hold's answer waits for the runs that took their lease before it was stored."""

from __future__ import annotations

import asyncio

import pytest

from consumers.errors import MappingHeld
from consumers.lease import Lease
from service.api.admin_mappings import _set_hold
from service.store import mapping_configs
from tests.integration.sync_world import World


async def hold(world: World, on: bool = True) -> None:
    async with world.db.session() as session:
        await mapping_configs.set_hold(session, "CUSTOMER", on)


async def test_a_run_of_a_held_mapping_applies_nothing(world: World) -> None:
    account = await world.human.dv_create("accounts", {"name": "Held Back Ltd", "customertypecode": 3})
    await hold(world)
    with pytest.raises(MappingHeld):
        await world.dv_event("CUSTOMER", "account", account["accountid"], "created")
    assert await world.human.bc_find("customers", "displayName eq 'Held Back Ltd'") == []
    await hold(world, False)
    await world.dv_event("CUSTOMER", "account", account["accountid"], "created")
    assert len(await world.human.bc_find("customers", "displayName eq 'Held Back Ltd'")) == 1


async def test_the_hold_answers_only_once_the_runs_already_applying_have_ended(world: World) -> None:
    running = Lease(world.db)  # a run of CUSTOMER that took its record lease before the hold was stored
    await running.add(["CUSTOMER:bc:4f6a0c1e-0000-0000-0000-000000000001"], "a run in flight")
    answer = asyncio.create_task(_set_hold("CUSTOMER", True, world.db))
    await asyncio.sleep(1.0)
    assert not answer.done(), "the hold answered while a run was still applying"
    await running.release()
    assert (await asyncio.wait_for(answer, 5))["runs_in_flight"] == 0
    # another mapping's runs do not delay it
    other = Lease(world.db)
    await other.add(["CONTACT:bc:4f6a0c1e-0000-0000-0000-000000000002"], "a run of another mapping")
    try:
        reply = await asyncio.wait_for(_set_hold("CUSTOMER", True, world.db), 2)
    finally:
        await other.release()
    assert reply == {"mappings": ["CUSTOMER"], "on_hold": True, "runs_in_flight": 0}
