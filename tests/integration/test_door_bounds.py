"""Resource bounds at the webhook doors, against the real api over HTTP: a database that hangs (its write lock
held by another connection) gives a 503 within the bound and never a 202 for what is not committed; a full
intake queue gives a 503 at once; a wrong clientState gives a 401 before the body is read."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from service.api import webhooks
from service.metrics import WEBHOOK_REQUESTS
from tests.conftest import sample_text
from tests.harness import CLIENT_STATE, WEBHOOK_KEY, make_settings, running_api, wait_for

DV = f"/webhooks/dataverse?code={WEBHOOK_KEY}"
BC = "/webhooks/business-central"
BOUND = 1.0  # webhook_store_timeout_seconds of these tests
DATABASE_TIMEOUT = 4.0  # far above BOUND: a 503 within the bound is the bound's doing
COMPANY = "f64eba74-dacd-4854-a584-1834f68cfc3a"


def counter(source: str, outcome: str) -> float:
    return WEBHOOK_REQUESTS.labels(source, outcome)._value.get()


def bc_batch(*, malformed: bool = False) -> dict[str, Any]:
    good = {"subscriptionId": "sub-customers", "clientState": CLIENT_STATE, "expirationDateTime": "2025-11-28T21:50:00Z",
            "resource": f"api/v2.0/companies({COMPANY})/customers(0a1b2c3d-0000-0000-0000-000000000001)",
            "changeType": "updated", "lastModifiedDateTime": "2025-11-25T21:49:12.57Z"}
    bad = good | {"changeType": "exploded"}  # dropped: the door asks a catch-up, in its own transaction
    return {"value": [good, bad] if malformed else [good]}


class WriteLock:
    """Another connection holding the outbox's write lock: the store hangs as on a stuck database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._pg: AsyncConnection | None = None

    async def hold(self) -> None:
        if self.url.startswith("sqlite"):
            self._sqlite = sqlite3.connect(self.url.split(":///", 1)[1], isolation_level=None, timeout=10,
                                           check_same_thread=False)
            self._sqlite.execute("BEGIN EXCLUSIVE")  # WAL: readers go on, writers wait
        else:
            engine = create_async_engine(self.url)
            self._pg = await engine.connect()
            await self._pg.execute(text("LOCK TABLE outbox_event IN EXCLUSIVE MODE"))  # reads go on

    async def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            await self._pg.rollback()
            await self._pg.close()
            await self._pg.engine.dispose()
            self._pg = None

    async def outbox_rows(self) -> int:
        """Counted on a connection of its own (the lock lets readers through)."""
        if self.url.startswith("sqlite"):
            with sqlite3.connect(self.url.split(":///", 1)[1]) as connection:
                return int(connection.execute("SELECT count(*) FROM outbox_event").fetchone()[0])
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as connection:
                return int((await connection.execute(text("SELECT count(*) FROM outbox_event"))).scalar_one())
        finally:
            await engine.dispose()


async def timed_post(http: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await http.post(url, **kwargs)
    return response, loop.time() - started


def bounded_settings(database_url: str, namespace: str, **overrides: Any) -> Any:
    return make_settings(database_url, namespace, webhook_store_timeout_seconds=BOUND,
                         database_timeout_seconds=DATABASE_TIMEOUT, **overrides)


async def test_a_hung_database_gives_503_within_the_bound_and_a_timed_out_transaction_leaves_nothing(
        rabbit, namespace, database_url) -> None:
    account = sample_text("dataverse-account-update.json")
    async with running_api(bounded_settings(database_url, namespace)) as (base, _app), \
            httpx.AsyncClient(base_url=base, timeout=30) as http:
        lock = WriteLock(database_url)
        await lock.hold()
        try:
            unavailable = counter("dataverse", "unavailable"), counter("business_central", "unavailable")
            answers = await asyncio.gather(
                timed_post(http, DV, content=account),
                timed_post(http, BC, json=bc_batch()),  # through the intake writer
                timed_post(http, BC, json=bc_batch(malformed=True)),  # events + catch-up in a transaction of its own
            )
            for response, seconds in answers:
                assert response.status_code == 503, response.text
                assert response.json()["outcome"] == "unavailable" and seconds < BOUND + 2.0
            assert counter("dataverse", "unavailable") == unavailable[0] + 1
            assert counter("business_central", "unavailable") == unavailable[1] + 2
            # The stores go on until the database timeout fails them; each rolls back whole.
            await wait_for(lambda: not webhooks.LATE, timeout=6 * DATABASE_TIMEOUT)
            assert await lock.outbox_rows() == 0
        finally:
            await lock.release()
        response = await http.post(DV, content=account)  # Dataverse's retry
        assert response.status_code == 202 and response.json()["new"] == 1
        response = await http.post(BC, json=bc_batch(malformed=True))
        assert response.status_code == 202 and response.json()["new"] == 1
        assert "catch-up requested" in response.json()["detail"]
    assert await lock.outbox_rows() == 2


async def test_events_committed_after_their_503_make_the_retry_a_duplicate(rabbit, namespace, database_url) -> None:
    account = sample_text("dataverse-account-update.json")
    async with running_api(bounded_settings(database_url, namespace)) as (base, _app), \
            httpx.AsyncClient(base_url=base, timeout=30) as http:
        lock = WriteLock(database_url)
        await lock.hold()
        try:
            response, seconds = await timed_post(http, DV, content=account)
            assert response.status_code == 503 and seconds < BOUND + 2.0
        finally:
            await lock.release()  # before the database timeout: the store goes through after all
        await wait_for(lambda: not webhooks.LATE, timeout=30)
        assert await lock.outbox_rows() == 1
        retry = await http.post(DV, content=account)
        assert retry.status_code == 202 and (retry.json()["new"], retry.json()["duplicates"]) == (0, 1)
    assert await lock.outbox_rows() == 1


async def test_a_full_intake_queue_gives_503_at_once(rabbit, namespace, sqlite_url) -> None:
    settings = make_settings(sqlite_url, namespace, webhook_store_timeout_seconds=5.0, database_timeout_seconds=3.0,
                             intake_queue_events=1)
    account = sample_text("dataverse-account-update.json")
    async with running_api(settings) as (base, app), httpx.AsyncClient(base_url=base, timeout=30) as http:
        writer = app.state.writer
        calls: list[int] = []
        store = writer.store

        async def counted(events: list[Any]) -> int:
            calls.append(len(events))
            return await store(events)

        writer.store = counted
        lock = WriteLock(sqlite_url)
        await lock.hold()
        try:
            first = asyncio.create_task(http.post(DV, content=account))  # taken by the writer, which hangs
            await wait_for(lambda: len(calls) == 1 and writer.waiting == 0)
            second = asyncio.create_task(http.post(DV, content=account))  # waits in the queue: it is full now
            await wait_for(lambda: len(calls) == 2 and writer.waiting == 1)
            unavailable = counter("dataverse", "unavailable")
            response, seconds = await timed_post(http, DV, content=account)
            assert response.status_code == 503 and seconds < 1.5, (response.status_code, seconds)
            assert response.json()["outcome"] == "unavailable" and "too many events" in response.json()["detail"]
            assert counter("dataverse", "unavailable") == unavailable + 1
            response, _ = await timed_post(http, BC, json=bc_batch())  # the BC door shares the queue
            assert response.status_code == 503 and "too many events" in response.json()["detail"]
        finally:
            await lock.release()
        assert {(await first).status_code, (await second).status_code} <= {202, 503}
        assert (await http.post(DV, content=account)).status_code == 202  # drained: requests are let in again


async def test_a_wrong_client_state_is_answered_401_before_the_rest_of_the_body_is_sent(
        rabbit, namespace, sqlite_url) -> None:
    """The body stops in the middle of its first entry, right after someone else's clientState: the answer comes
    without waiting for the rest (which never comes)."""
    settings = make_settings(sqlite_url, namespace)
    async with running_api(settings) as (_base, _app):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        try:
            head = b'{"value": [{"subscriptionId": "sub-customers", "clientState": "someone-else", "resource": "api/'
            writer.write(b"POST " + BC.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(head):x}\r\n".encode() + head + b"\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.split()[1] == b"401", status
            headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next(int(line.split(b":")[1]) for line in headers.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            assert json.loads(await reader.readexactly(length))["outcome"] == "unauthorized"
        finally:
            writer.close()


@pytest.mark.parametrize("where", [0, 1])
async def test_a_wrong_client_state_anywhere_stores_nothing(rabbit, namespace, sqlite_url, where: int) -> None:
    value = bc_batch(malformed=True)["value"] + bc_batch()["value"]
    value[where] = value[where] | {"clientState": "someone-else"}
    async with running_api(make_settings(sqlite_url, namespace)) as (base, _app), \
            httpx.AsyncClient(base_url=base) as http:
        response = await http.post(BC, json={"value": value})
        assert response.status_code == 401
    assert await WriteLock(sqlite_url).outbox_rows() == 0
