"""The client-side request budget: a sliding window that is never exceeded, and Retry-After pauses."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.connectors.budget import RequestBudget


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_never_more_than_limit_within_the_window() -> None:
    budget = RequestBudget(limit=5, window=0.3)
    times: list[float] = []

    async def one() -> None:
        await budget.acquire()
        times.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(16)))
    assert len(times) == 16
    assert most_in_any_window(times, 0.3) <= 5
    assert time.monotonic() - started >= 0.9  # 16 requests at 5 per 0.3 s need three full windows
    assert budget.used <= 5


async def test_used_counts_the_requests_in_the_current_window() -> None:
    budget = RequestBudget(limit=10, window=0.2)
    for _ in range(3):
        await budget.acquire()
    assert budget.used == 3
    await asyncio.sleep(0.25)
    assert budget.used == 0


async def test_pause_until_holds_every_sender() -> None:
    budget = RequestBudget(limit=100, window=10)
    budget.pause_until(time.monotonic() + 0.3)
    budget.pause_until(time.monotonic() + 0.1)  # a shorter pause does not cut the longer one short
    started = time.monotonic()
    await asyncio.gather(budget.acquire(), budget.acquire())
    assert time.monotonic() - started >= 0.29


def test_invalid_budget() -> None:
    with pytest.raises(ValueError):
        RequestBudget(0, 1.0)


async def test_a_slot_counts_from_the_end_of_the_request() -> None:
    """The server counts a request when it receives it: a slot is held while in flight and counted at
    its end, so a slow request cannot make the server see more than `limit` in one of its windows."""
    budget = RequestBudget(limit=2, window=0.2)
    started = time.monotonic()

    async def slow() -> None:
        async with budget.slot():
            await asyncio.sleep(0.3)

    tasks = [asyncio.create_task(slow()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert budget.used == 2
    await budget.acquire()  # room only once a slow request ended (0.3 s) and a window passed (0.2 s)
    assert time.monotonic() - started >= 0.49
    await asyncio.gather(*tasks)


def test_a_shared_budget_keeps_to_its_part() -> None:
    budget = RequestBudget(6000, 300)
    assert budget.limit == 6000
    budget.share(3)
    assert (budget.total, budget.limit) == (6000, 2000)
    budget.share(0)  # never below one part
    assert budget.limit == 6000
    tiny = RequestBudget(2, 1)
    tiny.share(5)
    assert tiny.limit == 1  # every worker may still send
