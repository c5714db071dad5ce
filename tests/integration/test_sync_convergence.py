"""Convergence: random interleaved creates, updates and deletes on both sides, with duplicate and
reordered deliveries, end with both systems equal on every mapped field of every coupled record."""

import random

import pytest

from consumers.errors import SyncFailure
from service.store import couplings
from tests.integration.sync_world import World

PAIRS = [("displayName", "name"), ("phoneNumber", "telephone1"), ("city", "address1_city")]


def same(bc_value, dv_value) -> bool:
    return (bc_value or None) == (dv_value or None)


@pytest.mark.parametrize("seed", [7, 2026])
async def test_random_histories_converge(world: World, seed: int) -> None:
    rng = random.Random(seed)
    bc_ids: list[str] = []
    dv_ids: list[str] = []
    pending: list[tuple[str, str, str]] = []  # (side, id, change)

    async def deliver(count: int) -> None:
        for _ in range(min(count, len(pending))):
            side, record_id, change = pending.pop(rng.randrange(len(pending)))
            if rng.random() < 0.3:
                pending.append((side, record_id, change))  # delivered again later
            try:
                if side == "bc":
                    await world.bc_event("CUSTOMER", "customers", record_id, change)
                else:
                    await world.dv_event("CUSTOMER", "account", record_id, change)
            except SyncFailure:
                pass  # a conflict or a vanished record: the next delivery settles it

    for step in range(45):
        action = rng.choice(["bc_create", "dv_create", "bc_update", "dv_update", "bc_update", "dv_update", "delete"])
        value = f"v{step}"
        if action == "bc_create" or (action.startswith("bc") and not bc_ids):
            record = await world.human.bc_create("customers", {"displayName": f"BC {seed}-{step}", "city": value})
            bc_ids.append(record["id"])
            pending.append(("bc", record["id"], "created"))
        elif action == "dv_create" or (action.startswith("dv") and not dv_ids):
            record = await world.human.dv_create("accounts", {"name": f"DV {seed}-{step}", "telephone1": value,
                                                              "customertypecode": 3})
            dv_ids.append(record["accountid"])
            pending.append(("dataverse", record["accountid"], "created"))
        elif action == "bc_update":
            record_id = rng.choice(bc_ids)
            if await world.human.bc_get("customers", record_id):
                field = rng.choice(["displayName", "phoneNumber", "city"])
                await world.human.bc_update("customers", record_id, {field: f"{field}-{value}"})
                pending.append(("bc", record_id, "updated"))
        elif action == "dv_update":
            record_id = rng.choice(dv_ids)
            if await world.human.dv_get("accounts", record_id):
                field = rng.choice(["name", "telephone1", "address1_city"])
                await world.human.dv_update("accounts", record_id, {field: f"{field}-{value}"})
                pending.append(("dataverse", record_id, "updated"))
        else:
            side = rng.choice(["bc", "dataverse"])
            ids = bc_ids if side == "bc" else dv_ids
            if ids:
                record_id = ids.pop(rng.randrange(len(ids)))
                if side == "bc" and await world.human.bc_get("customers", record_id):
                    await world.human.bc_delete("customers", record_id)
                elif side == "dataverse" and await world.human.dv_get("accounts", record_id):
                    await world.human.dv_delete("accounts", record_id)
                pending.append((side, record_id, "deleted"))
        await deliver(rng.randint(0, 2))
    await deliver(len(pending) * 2)
    while pending:
        await deliver(len(pending))

    async with world.db.session() as session:
        pairs = await couplings.list_for(session, "CUSTOMER", limit=10_000)
    assert pairs, "the history coupled records"
    checked = 0
    for coupling in pairs:
        customer = await world.human.bc_get("customers", coupling.bc_id)
        account = await world.human.dv_get("accounts", coupling.dataverse_id)
        assert customer is not None and account is not None, "a coupling outlived one of its records"
        for bc_field, dv_field in PAIRS:
            assert same(customer[bc_field], account[dv_field]), (coupling.bc_id, bc_field, customer[bc_field],
                                                                  account[dv_field])
        checked += 1
    assert checked == len(pairs)
