"""The running workers divide the request budgets (consumers/peers.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib

from consumers.peers import share_budgets
from service.connectors.budget import RequestBudget
from service.store.db import Database
from service.store.migrate import upgrade_async


async def until(predicate: object, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


async def test_workers_divide_the_budgets_and_take_them_back_when_one_stops(database_url: str) -> None:
    await upgrade_async(database_url)
    db = Database(database_url)
    budgets = [RequestBudget(6000, 300) for _ in range(3)]  # one per worker (a worker has BC and Dataverse)
    tasks = [asyncio.create_task(share_budgets(db, [budget], every=0.05)) for budget in budgets]
    try:
        await until(lambda: [b.limit for b in budgets] == [2000, 2000, 2000])
        tasks[0].cancel()  # a worker stops: it gives its lease back, the others take over its part
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]
        await until(lambda: [b.limit for b in budgets[1:]] == [3000, 3000])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()
