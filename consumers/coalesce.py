"""One synchronization of a record at a time in this process; events that arrive meanwhile fold into one re-run.

A change event only says "look at this record again": the engine reads the record's current state. So when
seven events of one Sales order (the header, five lines, the submit) reach a worker together, one run that
starts after the last of them arrived gives the same result as seven runs one after the other. Without this,
the six others wait for the record's lease (and, after a while, go round the delay queue) while holding
prefetch slots that other records could use.

Runs also wait for one of a fixed number of slots (`BCSYNC_WORKER_CONCURRENCY`): RabbitMQ's prefetch applies
per queue and a worker consumes about a dozen, so without a limit of its own a worker would start hundreds of
runs at once against a database pool of a few dozen connections. Only runs take a slot; an event that finds
its record's run still waiting for one is covered by that run's first pass and needs no pass of its own.

The events that were folded in are acknowledged when the run that covers them ends, and fail with it: a
failure sends every one of them to the retry path, as if each had run alone. Accounting: each pass stands for
one event; the others folded in had no pass of their own, and `run` returns how many, so that passes + those
= events.

A run that is cancelled (its handler timed out, or aiormq cancelled it with its broken connection) hands its
followers `RunInterrupted`, a transient failure, and not its cancellation: a follower's delivery may well be on
a live channel (RabbitMQ redelivers on the new connection while the old one's handlers are still being
cancelled), and a cancelled handler neither acknowledges nor retries, which would leave the message
unacknowledged until the broker's consumer_timeout. With a failure the follower takes the retry path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass


class RunInterrupted(ConnectionError):
    """The run an event folded into was cancelled before it covered the event: try again (transient)."""


@dataclass
class _Run:
    finished: asyncio.Future[None]
    started: bool = False  # the first pass holds a slot and has begun reading
    again: bool = False  # an event arrived after the current pass began reading
    deleted: bool = False  # one of the events not yet covered by a pass said the record was deleted
    waiting: int = 0  # events folded in since the current pass began
    before: int = 0  # events folded in before the first pass began: that pass covers them


class Coalescer:
    def __init__(self, slots: asyncio.Semaphore | None = None) -> None:
        self._runs: dict[Hashable, _Run] = {}
        self._slots = slots

    async def run(self, key: Hashable, job: Callable[[bool], Awaitable[None]], deleted: bool) -> int:
        """Run `job(deleted)` for `key`, or fold into the run already going on (then 0 is returned once the
        run has ended). The caller that ran it gets the number of folded events that had no pass of their own."""
        current = self._runs.get(key)
        if current is not None:
            current.deleted = current.deleted or deleted
            if current.started:
                current.again = True
                current.waiting += 1
            else:
                current.before += 1
            await asyncio.shield(current.finished)  # a cancelled follower must not cancel the run
            return 0
        current = _Run(asyncio.get_running_loop().create_future(), deleted=deleted)
        self._runs[key] = current
        try:
            async with self._slots if self._slots is not None else contextlib.nullcontext():
                current.started = True
                first_deleted, current.deleted = current.deleted, False
                await job(first_deleted)  # the caller's own event: if it fails, the caller and folded events retry
                absorbed = await self._rerun(current, job)
                return 0 if absorbed is None else current.before + absorbed
        except asyncio.CancelledError:
            if not current.finished.done():
                current.finished.set_exception(RunInterrupted(f"the run of {key!r} was cancelled"))
                current.finished.exception()  # retrieved here: followers may be none
            raise
        except BaseException as exc:
            current.finished.set_exception(exc)
            current.finished.exception()  # retrieved here: followers may be none
            raise
        finally:
            del self._runs[key]

    @staticmethod
    async def _rerun(current: _Run, job: Callable[[bool], Awaitable[None]]) -> int | None:
        """Re-run while events were folded in; they end with the last re-run (the caller's event is done).
        None if a re-run failed: then every folded event fails with it and comes back by the retry path."""
        absorbed = 0
        while current.again:
            folded, deleted = current.waiting, current.deleted
            current.again, current.deleted, current.waiting = False, False, 0
            try:
                await job(deleted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # only the folded events fail: they are retried, the caller's is applied
                current.finished.set_exception(exc)
                current.finished.exception()
                return None
            absorbed += folded - 1  # the re-run stands for one of them
        current.finished.set_result(None)
        return absorbed
