"""The last hour of each mapping, from the record history: runs per minute and the lag of its writes.

Any api process can read the history (the lag histogram lives in each worker's own metrics), so the overview
shows the same figures whichever api answers. At most `ROWS` of the newest runs are read: past that rate
(about 14 runs a second over the hour) the chart shows the latest part of the hour and says so.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from service.store import history
from service.store.db import Database

MINUTES = 60
ROWS = 50_000


@dataclass
class MappingActivity:
    runs_per_minute: list[int] = field(default_factory=lambda: [0] * MINUTES)  # oldest minute first
    lag_per_minute: list[float | None] = field(default_factory=lambda: [None] * MINUTES)  # median, seconds
    lag_p50: float | None = None  # seconds, over the hour
    lag_p99: float | None = None
    runs: int = 0


@dataclass
class Activity:
    by_mapping: dict[str, MappingActivity]
    truncated: bool  # more than ROWS runs in the hour: the oldest are not counted


def _percentile(ordered: list[int], share: float) -> float:
    """The nearest-rank percentile of sorted milliseconds, in seconds."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] / 1000


async def last_hour(session: AsyncSession, now: datetime | None = None) -> Activity:
    now = now or datetime.now(UTC)
    start = now - timedelta(minutes=MINUTES)
    rows = await history.recent_runs(session, start, limit=ROWS)
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * MINUTES)
    lags: dict[str, list[list[int]]] = defaultdict(lambda: [[] for _ in range(MINUTES)])
    for mapping, at, lag_ms in rows:
        minute = min(MINUTES - 1, max(0, int((at - start).total_seconds() // 60)))
        counts[mapping][minute] += 1
        if lag_ms is not None:
            lags[mapping][minute].append(lag_ms)
    out: dict[str, MappingActivity] = {}
    for mapping, per_minute in counts.items():
        every = sorted(lag for minute in lags[mapping] for lag in minute)
        out[mapping] = MappingActivity(
            runs_per_minute=per_minute,
            lag_per_minute=[statistics.median(m) / 1000 if m else None for m in lags[mapping]],
            lag_p50=_percentile(every, 0.5) if every else None, lag_p99=_percentile(every, 0.99) if every else None,
            runs=sum(per_minute))
    return Activity(out, truncated=len(rows) >= ROWS)


def sparkline(activity: MappingActivity, width: int = 240, height: int = 48) -> dict[str, object]:
    """SVG geometry of the chart: a bar per minute (runs) and a line with a dot per minute (median lag; a single
    minute draws no line, only its dot), each scaled to its own top."""
    top_runs = max(activity.runs_per_minute) or 1
    lags = [lag for lag in activity.lag_per_minute if lag is not None]
    top_lag = max(lags) if lags else 1.0
    step = width / MINUTES
    bars = [(round(i * step, 1), round(height - count / top_runs * height, 1), round(count / top_runs * height, 1))
            for i, count in enumerate(activity.runs_per_minute) if count]
    dots = [(round(i * step + step / 2, 1), round(height - lag / top_lag * (height - 2) - 1, 1))
            for i, lag in enumerate(activity.lag_per_minute) if lag is not None]
    points = " ".join(f"{x},{y}" for x, y in dots)
    return {"width": width, "height": height, "bar_width": round(step * 0.8, 1), "bars": bars, "points": points,
            "dots": dots,
            "top_runs": top_runs, "top_lag": round(top_lag, 2)}


class LastHourCache:
    """The last hour, computed at most every REFRESH_SECONDS per api process: reading and bucketing up to ROWS
    history rows takes 0.3 to 0.6 s (docs/benchmarks.md, Console page loads), too long for every page load. A stale
    value is shown at once while one background task computes the next; only the first load waits."""

    REFRESH_SECONDS = 15.0

    def __init__(self, db: Database) -> None:
        self._db = db
        self._value: Activity | None = None
        self._at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def _refresh(self) -> None:
        async with self._db.session() as session:
            value = await last_hour(session)
        self._value, self._at = value, time.monotonic()

    async def get(self) -> Activity:
        if self._value is None:
            await self._refresh()
        elif time.monotonic() - self._at > self.REFRESH_SECONDS and (
                self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh())
        assert self._value is not None
        return self._value
