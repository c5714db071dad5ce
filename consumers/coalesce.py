"""One synchronization of a record at a time in this process; events that arrive meanwhile fold into one re-run.

A change event only says "look at this record again": the engine reads the record's current state. So when
seven events of one Sales order (the header, five lines, the submit) reach a worker together, one run that
starts after the last of them arrived gives the same result as seven runs one after the other. Without this,
the six others wait for the record's lease (and, after a while, go round the delay queue) while holding
prefetch slots that other records could use.

The events that were folded in are acknowledged when the re-run that covers them ends, and fail with it: a
failure sends every one of them to the retry path, as if each had run alone.
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


class Coalescer:
    def __init__(self) -> None:
        self._runs: dict[Hashable, _Run] = {}

    async def run(self, key: Hashable, job: Callable[[bool], Awaitable[None]], deleted: bool) -> bool:
        """Run `job(deleted)` for `key`, or fold into the run already going on. True if this call ran it."""
        current = self._runs.get(key)
        if current is not None:
            current.again = True
            current.deleted = current.deleted or deleted
            await asyncio.shield(current.finished)  # a cancelled follower must not cancel the run
            return False
        current = _Run(asyncio.get_running_loop().create_future())
        self._runs[key] = current
        try:
            while True:
                await job(deleted)
                if not current.again:
                    break
                deleted, current.again, current.deleted = current.deleted, False, False
        except asyncio.CancelledError:
            current.finished.cancel()
            raise
        except BaseException as exc:
            current.finished.set_exception(exc)
            current.finished.exception()  # retrieved here: followers may be none
            raise
        else:
            current.finished.set_result(None)
        finally:
            del self._runs[key]
        return True
