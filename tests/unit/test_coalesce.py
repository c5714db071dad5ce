"""Events of a record that is being applied fold into one re-run (consumers/coalesce.py)."""

from __future__ import annotations

import asyncio

import pytest

from consumers.coalesce import Coalescer, RunInterrupted
from consumers.worker import transient_failure


class SlowJob:
    """Records each run's `deleted` flag; each run waits until the test lets it finish."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.runs: list[bool] = []
        self.gate = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, deleted: bool) -> None:
        self.runs.append(deleted)
        await self.gate.wait()
        if self.fail_on == len(self.runs):
            raise RuntimeError("boom")


async def test_events_arriving_during_a_run_fold_into_one_rerun() -> None:
    coalescer, job = Coalescer(), SlowJob()
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(coalescer.run("order-1", job, False)) for _ in range(6)]
    await asyncio.sleep(0.01)
    assert job.runs == [False]
    assert not any(f.done() for f in followers)  # acknowledged only after the run that covers them
    job.gate.set()
    results = await asyncio.gather(first, *followers)
    assert job.runs == [False, False]  # seven events, two runs: the second started after the last arrived
    assert results == [5] + [0] * 6  # two runs stand for two events; five had no run of their own


async def test_a_folded_delete_reaches_the_rerun() -> None:
    coalescer, job = Coalescer(), SlowJob()
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    follower = asyncio.create_task(coalescer.run("order-1", job, True))
    await asyncio.sleep(0.01)
    job.gate.set()
    await asyncio.gather(first, follower)
    assert job.runs == [False, True]


async def test_other_records_run_side_by_side_and_later_events_run_anew() -> None:
    coalescer, job = Coalescer(), SlowJob()
    both = [asyncio.create_task(coalescer.run(key, job, False)) for key in ("a", "b")]
    await asyncio.sleep(0.01)
    assert len(job.runs) == 2
    job.gate.set()
    assert await asyncio.gather(*both) == [0, 0]
    await coalescer.run("a", job, False)  # nothing running any more: a run of its own
    assert len(job.runs) == 3


async def test_a_failed_run_fails_every_folded_event() -> None:
    coalescer, job = Coalescer(), SlowJob(fail_on=1)
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    follower = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0.01)
    job.gate.set()
    for task in (first, follower):
        with pytest.raises(RuntimeError, match="boom"):
            await task
    assert job.runs == [False]  # no re-run after a failure: the retries of both events bring it back
    await coalescer.run("order-1", job, False)
    assert job.runs == [False, False]


async def test_a_cancelled_follower_does_not_cancel_the_run() -> None:
    coalescer, job = Coalescer(), SlowJob()
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    follower = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0.01)
    follower.cancel()
    job.gate.set()
    assert await first == 0  # the re-run went ahead; it stands for the (cancelled) follower
    assert follower.cancelled()


async def test_a_cancelled_run_hands_its_followers_a_transient_failure_not_its_cancellation() -> None:
    """Issue 13 (5): aiormq cancels the handlers of a broken connection while RabbitMQ already redelivers on the
    new one; a redelivered event that folded into a cancelled run must take the retry path (a cancelled handler
    neither acknowledges nor retries: its message would stay unacknowledged until consumer_timeout)."""
    coalescer, job = Coalescer(), SlowJob()
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    follower = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(RunInterrupted) as interrupted:
        await follower
    assert not follower.cancelled() and transient_failure(interrupted.value)  # the worker retries it
    job.gate.set()
    assert await coalescer.run("order-1", job, False) == 0  # the record runs again, on its own
    assert job.runs == [False, False]


async def test_a_run_cancelled_during_its_rerun_fails_the_folded_events_transiently() -> None:
    coalescer, job = Coalescer(), SteppedJob()
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    during = asyncio.create_task(coalescer.run("order-1", job, False))  # needs a re-run
    await job.step()  # the first pass ends well; the re-run begins
    assert len(job.runs) == 2
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(RunInterrupted):
        await during


async def test_a_failed_rerun_fails_only_the_folded_events() -> None:
    coalescer, job = Coalescer(), SlowJob(fail_on=2)
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(coalescer.run("order-1", job, False)) for _ in range(2)]
    await asyncio.sleep(0.01)
    job.gate.set()
    assert await first == 0  # its own event was applied by the first pass
    for task in followers:  # theirs was not: back to the retry path
        with pytest.raises(RuntimeError, match="boom"):
            await task
    assert job.runs == [False, False]


async def test_runs_wait_for_a_slot_and_events_folded_before_the_first_pass_need_no_rerun() -> None:
    slots = asyncio.Semaphore(1)
    coalescer, job = Coalescer(slots), SlowJob()
    first = asyncio.create_task(coalescer.run("a", job, False))
    await asyncio.sleep(0)
    queued = asyncio.create_task(coalescer.run("b", job, False))  # no slot free: waits without reading
    await asyncio.sleep(0)
    folded = [asyncio.create_task(coalescer.run("b", job, flag)) for flag in (False, True)]
    await asyncio.sleep(0.01)
    assert len(job.runs) == 1  # one slot: only "a" runs
    job.gate.set()
    results = await asyncio.gather(first, queued, *folded)
    assert job.runs == [False, True]  # "b" ran once, after its three events, and saw the delete among them
    assert results == [0, 2, 0, 0]  # one pass stands for three events: two had none of their own


class SteppedJob:
    """Each run waits for its own go-ahead (`step()` lets the oldest waiting run finish); run 2 fails."""

    def __init__(self) -> None:
        self.runs: list[bool] = []
        self.gates: list[asyncio.Event] = []

    async def __call__(self, deleted: bool) -> None:
        self.runs.append(deleted)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if len(self.gates) == 3 and gate is self.gates[2]:
            raise RuntimeError("boom")

    async def step(self) -> None:
        next(g for g in self.gates if not g.is_set()).set()
        await asyncio.sleep(0.01)


async def test_a_failed_rerun_fails_events_folded_before_the_first_pass_too() -> None:
    coalescer, job = Coalescer(asyncio.Semaphore(1)), SteppedJob()
    blocker = asyncio.create_task(coalescer.run("x", job, False))  # holds the only slot
    await asyncio.sleep(0)
    first = asyncio.create_task(coalescer.run("order-1", job, False))
    await asyncio.sleep(0)
    before = asyncio.create_task(coalescer.run("order-1", job, False))  # covered by order-1's first pass
    await job.step()  # "x" ends; order-1's first pass begins
    during = asyncio.create_task(coalescer.run("order-1", job, False))  # needs a re-run
    await job.step()  # the first pass ends well; the re-run begins
    await job.step()  # the re-run fails
    assert await blocker == 0
    assert await first == 0  # nothing counted as folded: the folded events come back by the retry path
    for task in (before, during):
        with pytest.raises(RuntimeError, match="boom"):
            await task
    assert len(job.runs) == 3
