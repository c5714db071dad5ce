"""A worker applies at most BCSYNC_WORKER_CONCURRENCY records at once, however many events it holds."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from consumers.sync import SyncEngine
from tests.integration.sync_world import World


async def test_events_beyond_the_concurrency_wait_for_a_slot_and_all_apply(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = world.engine
    limited = SyncEngine(engine.ctx, concurrency=3)
    monkeypatch.setattr(world, "engine", limited)
    accounts = [(await world.human.dv_create("accounts", {"name": f"Slot {n} Ltd", "customertypecode": 3}))
                ["accountid"] for n in range(12)]
    running, peak = 0, 0
    sync_record = limited.sync_record
    inside: contextvars.ContextVar[bool] = contextvars.ContextVar("inside", default=False)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        if inside.get():  # a referenced record synchronized first runs within its record's slot
            return await sync_record(*args, **kwargs)
        inside.set(True)
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.02)  # long enough for every event to be waiting at once
            return await sync_record(*args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(limited, "sync_record", counted)
    await asyncio.gather(*(world.dv_event("CUSTOMER", "account", a, "created") for a in accounts))
    assert peak == 3, f"{peak} records were applied at once"
    customers = await world.human.bc_find("customers", "startswith(displayName,'Slot ')")
    assert len(customers) == 12


async def test_a_reconciliation_takes_a_slot_per_record_so_live_events_get_through(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """One slot, a reconciliation of six customers under way: a live event is applied before it ends."""
    limited = SyncEngine(world.engine.ctx, concurrency=1)
    monkeypatch.setattr(world, "engine", limited)
    for n in range(6):
        await world.human.bc_create("customers", {"displayName": f"Swept {n}"})
    account = (await world.human.dv_create("accounts", {"name": "Live Ltd", "customertypecode": 3}))["accountid"]
    order: list[str] = []
    sync_record = limited.sync_record

    async def slow(rule: Any, side: str, record_id: str, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)
        applied = await sync_record(rule, side, record_id, **kwargs)
        order.append(kwargs.get("kind", "live"))
        return applied

    monkeypatch.setattr(limited, "sync_record", slow)
    sweep = asyncio.create_task(limited.reconcile(limited.rules["CUSTOMER"], "bc", None, True))
    await asyncio.sleep(0.12)  # the sweep is on its second or third record
    await world.dv_event("CUSTOMER", "account", account, "created")
    await sweep
    assert "live" in order and order.index("live") < len(order) - 1, order
    assert order.count("reconcile") >= 6
