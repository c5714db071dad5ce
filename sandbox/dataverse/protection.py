"""Service protection (requests per user per sliding window → 429) and injected faults."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_REQUESTS = 6000
DEFAULT_WINDOW = 300.0


class Budget:
    """Dataverse counts requests per user over a sliding 5-minute window; beyond it answers 429."""

    def __init__(self, requests: int = DEFAULT_REQUESTS, window: float = DEFAULT_WINDOW) -> None:
        self.requests = requests
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def configure(self, requests: int, window: float) -> None:
        self.requests, self.window = requests, window
        self._hits.clear()

    def retry_after(self, user: str) -> float | None:
        """None when the request may run (and is counted); else seconds until it may."""
        now = time.monotonic()
        hits = self._hits.setdefault(user, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.requests:
            return max(self.window - (now - hits[0]), 0.001)
        hits.append(now)
        return None


@dataclass
class FaultRule:
    status: int
    count: int = 1
    retry_after: int | None = None
    path_contains: str | None = None
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.count != 0 and (self.method is None or self.method.upper() == method)
                and (self.path_contains is None or self.path_contains in path))


@dataclass
class Faults:
    latency_ms: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    drop_webhooks: int = 0          # next N deliveries are dropped; -1 drops all
    webhook_latency_ms: int = 0

    def take(self, method: str, path: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(method, path):
                if rule.count > 0:
                    rule.count -= 1
                return rule
        return None

    def take_drop(self) -> bool:
        if self.drop_webhooks == 0:
            return False
        if self.drop_webhooks > 0:
            self.drop_webhooks -= 1
        return True

    def apply(self, spec: dict[str, Any]) -> None:
        """Merge a control request: latency, a status storm, webhook drops (see README)."""
        if "latency_ms" in spec:
            self.latency_ms = int(spec["latency_ms"])
        if "webhook_latency_ms" in spec:
            self.webhook_latency_ms = int(spec["webhook_latency_ms"])
        if "drop_webhooks" in spec:
            value = spec["drop_webhooks"]
            self.drop_webhooks = -1 if value is True else (0 if value is False else int(value))
        if "status" in spec:
            self.rules.append(FaultRule(
                status=int(spec["status"]), count=int(spec.get("count", 1)),
                retry_after=spec.get("retry_after"), path_contains=spec.get("path_contains"),
                method=spec.get("method")))

    def clear(self) -> None:
        self.latency_ms, self.drop_webhooks, self.webhook_latency_ms = 0, 0, 0
        self.rules.clear()

    def describe(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "drop_webhooks": self.drop_webhooks,
                "webhook_latency_ms": self.webhook_latency_ms,
                "rules": [asdict(r) for r in self.rules if r.count != 0]}
