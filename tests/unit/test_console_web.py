"""Pieces of the console that need no server: where a sign-in may return to, the session cookie's options, the
last hour's figures and chart."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.datastructures import State
from starlette.middleware.sessions import SessionMiddleware

from service.console import activity
from service.console.app import create_console
from service.console.web import local_path, remember, remembered
from service.settings import Settings


@pytest.mark.parametrize(("target", "expected"), [
    ("/console/errors?mapping=CUSTOMER", "/console/errors?mapping=CUSTOMER"),
    ("/console/", "/console/"),
    (None, "/console/"),
    ("", "/console/"),
    ("https://evil.example/console", "/console/"),
    ("//evil.example/console", "/console/"),
    ("/admin/status", "/console/"),
    ("/console\\..\\x", "/console/"),
])
def test_a_sign_in_returns_only_to_a_console_path(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


def _session_options(public_url: str) -> dict[str, Any]:
    settings = Settings(_env_file=None, tenant_id="t", client_id="c", client_secret="s",  # type: ignore[call-arg]
                        public_url=public_url, console_session_secret="k" * 32, console_session_hours=2)
    console = create_console(settings, State())
    [session] = [m for m in console.user_middleware if m.cls is SessionMiddleware]
    return dict(session.kwargs)


def test_the_session_cookie_is_secure_behind_https_and_lasts_the_set_hours() -> None:
    options = _session_options("https://bcsync.example.com")
    assert options["https_only"] is True
    assert options["same_site"] == "lax" and options["path"] == "/console"
    assert options["max_age"] == 7200
    assert _session_options("http://127.0.0.1:8000")["https_only"] is False


async def test_the_last_hour_counts_runs_per_minute_and_the_lag_of_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    rows: list[tuple[str, datetime, int | None]] = [
        ("CUSTOMER", now - timedelta(minutes=59, seconds=30), 1000),  # the oldest minute
        ("CUSTOMER", now - timedelta(seconds=10), 3000),  # the newest minute
        ("CUSTOMER", now - timedelta(seconds=20), None),  # an echo: a run, no lag
        ("ITEM-PRODUCT", now - timedelta(minutes=30), 200),
    ]

    async def fake_recent_runs(_session: Any, since: datetime, *, limit: int) -> list[Any]:
        assert since == now - timedelta(minutes=60) and limit == activity.ROWS
        return rows

    monkeypatch.setattr(activity.history, "recent_runs", fake_recent_runs)
    hour = await activity.last_hour(None, now)  # type: ignore[arg-type]
    customer = hour.by_mapping["CUSTOMER"]
    assert customer.runs == 3
    assert customer.runs_per_minute[0] == 1 and customer.runs_per_minute[-1] == 2
    assert customer.lag_per_minute[-1] == 3.0 and customer.lag_per_minute[0] == 1.0
    assert (customer.lag_p50, customer.lag_p99) == (1.0, 3.0)  # nearest rank of [1.0, 3.0]
    assert hour.by_mapping["ITEM-PRODUCT"].lag_p50 == 0.2
    assert not hour.truncated
    chart = activity.sparkline(customer)
    assert len(chart["bars"]) == 2  # type: ignore[arg-type]
    assert chart["top_runs"] == 2 and chart["top_lag"] == 3.0
    assert len(str(chart["points"]).split()) == 2 and len(chart["dots"]) == 2  # type: ignore[arg-type]


async def test_the_last_hour_is_computed_once_then_refreshed_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[int] = []

    async def fake_last_hour(_session: Any) -> activity.Activity:
        computed.append(len(computed))
        return activity.Activity({}, truncated=len(computed) > 1)  # the second value differs from the first

    class FakeDatabase:
        def session(self) -> Any:
            class Session:
                async def __aenter__(self) -> None:
                    return None

                async def __aexit__(self, *_: Any) -> None:
                    return None
            return Session()

    monkeypatch.setattr(activity, "last_hour", fake_last_hour)
    cache = activity.LastHourCache(FakeDatabase())  # type: ignore[arg-type]
    first = await cache.get()
    assert computed == [0] and not first.truncated
    assert (await cache.get()) is first and computed == [0]  # fresh: no new reading
    monkeypatch.setattr(activity.LastHourCache, "REFRESH_SECONDS", 0.0)
    stale = await cache.get()
    assert stale is first  # the stale value at once ...
    await asyncio.sleep(0.01)
    assert computed == [0, 1] and (await cache.get()).truncated  # ... and the next one computed meanwhile


def test_a_remembered_live_result_is_reused_for_a_minute_only(monkeypatch: pytest.MonkeyPatch) -> None:
    request: Any = type("Request", (), {"app": type("App", (), {"state": State()})()})()
    assert remembered(request, "setup-check") is None
    remember(request, "setup-check", {"ok": True})
    kept = remembered(request, "setup-check")
    assert kept is not None and kept[0] == {"ok": True} and kept[1] < 1
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 61)
    assert remembered(request, "setup-check") is None
