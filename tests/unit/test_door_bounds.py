"""Resource bounds at the webhook doors, piece by piece: the BC reader refuses a wrong clientState as soon as it
is parsed, the intake queue is bounded, a store that takes too long is answered for at once, and the api's
uvicorn options (the concurrency limit) reach uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from service import runners
from service.api import webhooks
from service.api.bc_notifications import Limits, NotificationReader
from service.intake_writer import IntakeFull, IntakeWriter
from service.settings import Settings
from tests.harness import CLIENT_STATE, INTEGRATION_USER, free_port
from tests.unit.test_bc_notification_stream import batch, entry

# ---- the BC reader: a wrong clientState ends the reading where it is parsed ---------------------------------


def test_a_wrong_client_state_is_refused_before_its_entry_ends() -> None:
    reader = NotificationReader(CLIENT_STATE, "c")
    head = b'{"value": [{"subscriptionId": "sub", "clientState": "someone-else", "resource": "api/v2.0/comp'
    assert reader.feed(head) is False  # nothing more is needed: the rest of the body is never read
    assert reader.close().wrong_client_state


@pytest.mark.parametrize("state", [CLIENT_STATE, None])
def test_our_client_state_or_none_reads_on(state: str | None) -> None:
    reader = NotificationReader(CLIENT_STATE, "c")
    head = json.dumps({"value": [{"clientState": state, "subscriptionId": "sub"}]}).encode()[:-3]
    assert reader.feed(head) is True and not reader.reading.wrong_client_state


def test_a_wrong_client_state_in_an_entry_over_the_size_limit_is_refused() -> None:
    """The entry is skipped for its size, but its clientState is still read: someone else's batch is a 401."""
    big = entry("items", clientState="someone-else")
    body = batch(entry(), {"padding": "x" * 20_000, **big})
    reader = NotificationReader(CLIENT_STATE, "c", Limits(max_entry_bytes=16 * 1024))
    reader.feed(body)
    reading = reader.close()
    assert reading.wrong_client_state  # the answer is 401, whatever was counted before


def test_a_wrong_client_state_past_the_entry_limit_is_refused() -> None:
    body = batch(entry(), entry(), entry(clientState="someone-else"))
    reader = NotificationReader(CLIENT_STATE, "c", Limits(max_entries=2))
    reader.feed(body)
    assert reader.close().wrong_client_state


def test_a_client_state_value_that_is_no_string_is_refused_at_once() -> None:
    reader = NotificationReader(CLIENT_STATE, "c")
    assert reader.feed(b'{"value": [{"clientState": {"nested": ') is False
    assert reader.close().wrong_client_state


def test_other_members_named_client_state_are_not_an_entrys() -> None:
    body = json.dumps({"other": [{"clientState": "wrong"}], "value": [entry()],
                       "more": {"x": {"clientState": "wrong"}}}).encode()
    reader = NotificationReader(CLIENT_STATE, "c")
    reader.feed(body)
    reading = reader.close()
    assert not reading.wrong_client_state and len(reading.events) == 1


# ---- the intake queue -------------------------------------------------------------------------------------------


class HangingStore:
    """Stands in for the database: every transaction waits until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.writing = asyncio.Event()
        self.written: list[Any] = []

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[HangingStore]:
        yield self

    async def store_events(self, session: Any, events: list[Any]) -> list[bool]:
        self.writing.set()
        await self.release.wait()
        self.written += events
        return [True] * len(events)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> HangingStore:
    fake = HangingStore()
    monkeypatch.setattr("service.intake_writer.outbox", fake)
    return fake


async def test_a_full_intake_queue_refuses_at_once_and_takes_requests_again_once_it_drains(
        store: HangingStore) -> None:
    writer = IntakeWriter(store, max_waiting=5)  # type: ignore[arg-type]
    running = asyncio.create_task(writer.run())
    try:
        first = asyncio.create_task(writer.store(["a"] * 3))  # type: ignore[list-item]
        await asyncio.wait_for(store.writing.wait(), 5)  # taken by the writer, which hangs
        second = asyncio.create_task(writer.store(["b"] * 5))  # type: ignore[list-item]
        await asyncio.sleep(0)
        assert writer.waiting == 5
        with pytest.raises(IntakeFull):
            await asyncio.wait_for(writer.store(["c"]), 0.5)  # type: ignore[list-item]
        store.release.set()
        assert await asyncio.wait_for(asyncio.gather(first, second), 5) == [3, 5]
        assert writer.waiting == 0
        # Below the bound a request is let in whatever its size (a BC batch may carry 20,000 events).
        assert await asyncio.wait_for(writer.store(["d"] * 50), 5) == 50  # type: ignore[list-item]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_the_events_of_a_request_that_stopped_waiting_are_still_written(store: HangingStore) -> None:
    writer = IntakeWriter(store, max_waiting=100)  # type: ignore[arg-type]
    running = asyncio.create_task(writer.run())
    try:
        first = asyncio.create_task(writer.store(["a"]))  # type: ignore[list-item]
        await asyncio.wait_for(store.writing.wait(), 5)
        gave_up = asyncio.create_task(writer.store(["b", "c"]))  # type: ignore[list-item]
        await asyncio.sleep(0)
        gave_up.cancel()
        store.release.set()
        assert await asyncio.wait_for(first, 5) == 1
        await asyncio.wait_for(_until(lambda: len(store.written) == 3), 5)
        assert store.written == ["a", "b", "c"] and writer.waiting == 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


# ---- the time bound of a store ----------------------------------------------------------------------------------


async def test_a_store_that_takes_too_long_is_answered_at_once_and_goes_on_in_the_background() -> None:
    release = asyncio.Event()

    async def slow() -> int:
        await release.wait()
        return 7

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(webhooks.StoreTimeout):
        await webhooks.within(0.2, slow())
    assert loop.time() - started < 1.0
    assert len(webhooks.LATE) == 1  # kept (not cancelled): what it commits is kept
    release.set()
    await asyncio.wait_for(_until(lambda: not webhooks.LATE), 5)
    assert await webhooks.within(1.0, asyncio.sleep(0, result=3)) == 3


# ---- uvicorn's options ------------------------------------------------------------------------------------------


def test_run_api_hands_the_concurrency_limit_and_keep_alive_to_uvicorn(
        monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    for name, value in {"DATAVERSE_WEBHOOK_KEY": "k", "BC_CLIENT_STATE": "s", "INTEGRATION_USER_ID": INTEGRATION_USER,
                        "API_LIMIT_CONCURRENCY": "37", "API_KEEP_ALIVE_SECONDS": "9"}.items():
        monkeypatch.setenv(f"BCSYNC_{name}", value)
    monkeypatch.chdir("/")  # no .env
    seen: dict[str, Any] = {}
    monkeypatch.setattr(runners.uvicorn, "run", lambda app, **options: seen.update(options))
    monkeypatch.setattr(runners, "configure_logging", lambda level: None)
    runners.run_api()
    assert seen["limit_concurrency"] == 37 and seen["timeout_keep_alive"] == 9
    assert Settings(_env_file=None).api_limit_concurrency == 37  # type: ignore[call-arg]


def test_the_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    options = runners.server_options(settings)
    assert (options["limit_concurrency"], options["timeout_keep_alive"]) == (512, 5)
    assert (settings.webhook_store_timeout_seconds, settings.intake_queue_events,
            settings.database_timeout_seconds) == (10.0, 10_000, 30.0)


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        pass
    return int(status.split()[1])


@pytest.mark.parametrize(("limit", "third"), [(3, 503), (512, 200)])
async def test_over_the_concurrency_limit_uvicorn_answers_503(limit: int, third: int) -> None:
    settings = Settings(_env_file=None, port=free_port(), api_limit_concurrency=limit)  # type: ignore[call-arg]
    server = uvicorn.Server(uvicorn.Config(_ok, lifespan="off", **runners.server_options(settings)))
    task = asyncio.create_task(server.serve())
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request_on_a_new_connection() -> int:
        connections.append(await asyncio.open_connection("127.0.0.1", settings.port))
        await asyncio.sleep(0.1)  # accepted: it counts from now on, busy or idle
        return await _get(*connections[-1])

    try:
        await asyncio.wait_for(_until(lambda: server.started), 10)
        connections.append(await asyncio.open_connection("127.0.0.1", settings.port))  # idle, but it counts
        assert await request_on_a_new_connection() == 200  # 2 open connections
        assert await request_on_a_new_connection() == third  # 3 open connections: at the limit of 3
    finally:
        for _, writer in connections:
            writer.close()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
