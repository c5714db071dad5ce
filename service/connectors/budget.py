"""Client-side request budget: a sliding-window rate limiter per external system.

Both Business Central and Dataverse allow 6,000 requests per 5-minute sliding window per user and answer
429 beyond. Staying under the limit on our side keeps the service out of throttling (and its back-off)
altogether; a `Retry-After` that arrives anyway pauses every sender, not just the one that got it.

The server counts a request when it *receives* it, which is some time after we decided to send it. A
request counted at our send time could therefore land in a later server window than ours (measured
against the live sandbox: 22 in a window with a limit of 20). The transport uses `slot()`, which holds
the request as in flight and counts it at its completion, when the server has surely received it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class RequestBudget:
    """Never more than `limit` requests per `window` seconds in this process: the whole `total`, or this
    process's part of it when `share(parts)` says how many processes divide it (see consumers/peers.py)."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a request budget needs limit >= 1 and window > 0")
        self.total = limit
        self.parts = 1
        self.window = window
        self._sent: deque[float] = deque()  # monotonic times at which requests were counted
        self._in_flight = 0  # requests of `slot()` not yet finished: they occupy a place until then
        self._paused_until = 0.0
        # Waiters queue on the lock in arrival order; only the head sleeps for a free place.
        self._lock = asyncio.Lock()
        self._finished = asyncio.Event()

    @property
    def limit(self) -> int:
        return max(1, self.total // self.parts)

    def share(self, parts: int) -> None:
        """Keep to 1/`parts` of the total from now on (requests already counted stay counted)."""
        self.parts = max(1, parts)

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()

    @property
    def used(self) -> int:
        self._expire(time.monotonic())
        return len(self._sent) + self._in_flight

    def pause_until(self, monotonic_deadline: float) -> None:
        # Only ever extends a pause: an earlier, shorter Retry-After must not cut a longer one short.
        self._paused_until = max(self._paused_until, monotonic_deadline)

    async def _wait_for_room(self) -> None:
        """Return (holding the lock) once a request may be counted."""
        while True:
            now = time.monotonic()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            self._expire(now)
            if len(self._sent) + self._in_flight < self.limit:
                return
            if self._sent:  # entries are appended in time order: the first leaves the window first
                await asyncio.sleep(max(self._sent[0] + self.window - now, 0.001))
            else:  # every place is in flight: the first to finish is counted then, and leaves a window later
                self._finished.clear()
                await self._finished.wait()

    async def acquire(self) -> None:
        async with self._lock:
            await self._wait_for_room()
            self._sent.append(time.monotonic())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Like `acquire`, but the request counts from its completion (see the module docstring)."""
        async with self._lock:
            await self._wait_for_room()
            self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._sent.append(time.monotonic())
            self._finished.set()
