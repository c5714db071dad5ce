"""What stands between a client and the API: the request log, fault injection, service protection.

Service protection follows BC's documented limit: a request budget per sliding window (default 6,000
per 300 s) beyond which requests get 429 with `Retry-After`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Faults:
    latency_ms: int = 0
    status: int = 0  # a storm: the next `count` API requests answer `status`
    count: int = 0
    retry_after: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "status": self.status, "count": self.count,
                "retry_after": self.retry_after}


@dataclass
class Budget:
    limit: int = 6000
    window: float = 300.0
    hits: deque[float] = field(default_factory=deque)

    def take(self) -> float | None:
        """Count a request; None if within budget, else seconds until a slot frees up."""
        now = time.monotonic()
        while self.hits and self.hits[0] <= now - self.window:
            self.hits.popleft()
        if len(self.hits) >= self.limit:
            return max(self.hits[0] + self.window - now, 0.001)
        self.hits.append(now)
        return None

    def used(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self.hits if t > now - self.window)


@dataclass
class RequestLog:
    entries: list[dict[str, Any]] = field(default_factory=list)
    cap: int = 20000
    total: int = 0  # requests ever logged (clearing the log or its cap drops entries, not this count)

    def add(self, method: str, path: str, status: int, started: float, duration_ms: float) -> None:
        when = datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.entries.append({"time": when, "method": method, "path": path, "status": status,
                             "duration_ms": round(duration_ms, 2)})
        self.total += 1
        if len(self.entries) > self.cap:
            del self.entries[: len(self.entries) - self.cap]
