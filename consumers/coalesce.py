"""One synchronization of a record at a time in this process; events that arrive meanwhile fold into one re-run.

A change event only says "look at this record again": the engine reads the record's current state. So when
seven events of one Sales order (the header, five lines, the submit) reach a worker together, one run that
starts after the last of them arrived gives the same result as seven runs one after the other. Without this,
the six others wait for the record's lease (and, after a while, go round the delay queue) while holding
prefetch slots that other records could use.

The events that were folded in are acknowledged when the re-run that covers them ends, and fail with it: a
failure sends every one of them to the retry path, as if each had run alone. Accounting: each run (the first
and every re-run) stands for one event; the others folded into a re-run had no run of their own, and `run`
returns how many, so that runs + those = events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Run:
    finished: asyncio.Future[None]
    again: bool = False  # an event arrived after the current pass began reading
    deleted: bool = False  # and one of those said the record was deleted
    waiting: int = 0  # events folded in since the current pass began


class Coalescer:
    def __init__(self) -> None:
        self._runs: dict[Hashable, _Run] = {}

    async def run(self, key: Hashable, job: Callable[[bool], Awaitable[None]], deleted: bool) -> int:
        """Run `job(deleted)` for `key`, or fold into the run already going on (then 0 is returned once the
        run has ended). The caller that ran it gets the number of folded events that had no run of their own."""
        current = self._runs.get(key)
        if current is not None:
            current.again = True
            current.deleted = current.deleted or deleted
            current.waiting += 1
            await asyncio.shield(current.finished)  # a cancelled follower must not cancel the run
            return 0
        current = _Run(asyncio.get_running_loop().create_future())
        self._runs[key] = current
        try:
            await job(deleted)  # this caller's own event: if it fails, the caller and any folded events retry
            return await self._rerun(current, job)
        except asyncio.CancelledError:
            current.finished.cancel()
            raise
        except BaseException as exc:
            current.finished.set_exception(exc)
            current.finished.exception()  # retrieved here: followers may be none
            raise
        finally:
            del self._runs[key]

    @staticmethod
    async def _rerun(current: _Run, job: Callable[[bool], Awaitable[None]]) -> int:
        """Re-run while events were folded in; they end with the last re-run (the caller's event is done)."""
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
                return absorbed
            absorbed += folded - 1  # the re-run stands for one of them
        current.finished.set_result(None)
        return absorbed
