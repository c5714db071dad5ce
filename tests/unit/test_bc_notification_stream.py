"""The streaming reader of Business Central notification batches (service/api/bc_notifications.py): what it
keeps, what it drops and why, wherever the body's chunks break, within its limits."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect

from service.api.bc_notifications import Limits, NotificationReader, Reading, read_notifications
from tests.conftest import sample_text
from tests.harness import CLIENT_STATE

COMPANY = "f64eba74-dacd-4854-a584-1834f68cfc3a"


def entry(entity: str = "customers", record: str | None = None, change: str = "updated", **fields: Any) -> dict:
    record = record or str(uuid.uuid4())
    return {"subscriptionId": f"sub-{entity}", "clientState": CLIENT_STATE,
            "expirationDateTime": "2025-11-28T21:50:00Z",
            "resource": f"api/v2.0/companies({COMPANY})/{entity}({record})", "changeType": change,
            "lastModifiedDateTime": "2025-11-25T21:49:12.57Z"} | fields


def batch(*entries: Any) -> bytes:
    return json.dumps({"value": list(entries)}).encode()


def read(body: bytes, chunk: int | None = None, limits: Limits | None = None) -> Reading:
    reader = NotificationReader(CLIENT_STATE, "corr", limits or Limits())
    size = chunk or max(len(body), 1)
    for start in range(0, len(body), size):
        if not reader.feed(body[start:start + size]):
            break
    return reader.close()


def summary(reading: Reading) -> tuple:
    """What a reading amounts to, whatever the chunks were."""
    return ([e.dedupe_key for e in reading.events], reading.authenticated, reading.wrong_client_state,
            dict(reading.dropped), reading.dropped_entities, reading.dropped_unknown)


CHUNKS = [None, 1, 3, 64]  # whole, and split anywhere


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_well_formed_batch_gives_one_event_per_entry(chunk: int | None) -> None:
    reading = read(sample_text("bc-notifications.json").encode(), chunk)
    assert [(e.entity, e.change_type) for e in reading.events] == [
        ("customers", "created"), ("customers", "updated"), ("items", "deleted"), ("salesInvoices", "collection"),
        ("contacts", "collection")]
    assert reading.authenticated == 5 and not reading.dropped and not reading.dropped_unknown
    assert all(e.correlation_id == "corr" for e in reading.events)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_one_malformed_entry_among_many_is_dropped_with_its_entity(chunk: int | None) -> None:
    good = [entry("customers") for _ in range(50)] + [entry("items") for _ in range(50)]
    bad = entry("salesOrders", change="renamed")  # not a change type: its entity set is still known
    reading = read(batch(*good[:30], bad, *good[30:]), chunk)
    assert len(reading.events) == 100 and reading.authenticated == 101
    assert reading.dropped == {"malformed": 1} and reading.dropped_entities == {(COMPANY, "salesOrders")}
    assert not reading.dropped_unknown
    assert reading.reasons == ["salesOrders: changeType: Input should be 'created', 'updated', 'deleted' or "
                               "'collection'"]


@pytest.mark.parametrize("bad", [
    entry(resource="not a resource"),  # unparseable resource
    entry(resource=5),
    5, "text", None, [entry()],  # not an object
])
def test_an_entry_whose_entity_is_unknown_marks_the_reading_unknown(bad: Any) -> None:
    reading = read(batch(entry(), bad, entry()), 1)
    assert len(reading.events) == 2 and reading.dropped_total == 1 and reading.dropped_unknown
    assert reading.dropped_entities == set()


def test_a_collection_entry_naming_a_record_is_malformed_but_its_entity_is_known() -> None:
    reading = read(batch(entry("items", change="collection"), entry()))
    assert len(reading.events) == 1 and reading.dropped == {"malformed": 1}
    assert reading.dropped_entities == {(COMPANY, "items")}


@pytest.mark.parametrize("chunk", CHUNKS)
def test_an_entry_over_the_size_limit_is_dropped_and_the_rest_kept(chunk: int | None) -> None:
    large = entry(padding="x" * 20_000)
    deep = entry(padding="DEEP")  # small as text (10 kB), large as tokens
    body = batch(entry(), large, entry(), deep, entry()).replace(b'"DEEP"', b"[" * 5000 + b"]" * 5000)
    reading = read(body, chunk)
    assert len(reading.events) == 3 and reading.dropped == {"entry_too_large": 2} and reading.dropped_unknown
    fits = read(batch(entry(padding="x" * 15_000)))  # a large but bounded entry is still read
    assert len(fits.events) == 1 and not fits.dropped


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_truncated_body_keeps_the_entries_before_the_cut(chunk: int | None) -> None:
    body = batch(*(entry() for _ in range(10)))
    cut = body.rindex(b"{")  # inside the last entry
    reading = read(body[:cut + 40], chunk)
    assert len(reading.events) == 9 and reading.dropped == {"body_truncated": 1} and reading.dropped_unknown


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("body", [b"nope", b"\xff\xfe{}", b"<xml/>", b'{"value": [NaN]}', b"{'value': []}"])
def test_a_body_that_is_not_json_gives_nothing(chunk: int | None, body: bytes) -> None:
    reading = read(body, chunk)
    assert reading.events == [] and reading.authenticated == 0 and reading.dropped == {"not_json": 1}


@pytest.mark.parametrize("body", [b"", b"   "])
def test_an_empty_body_gives_nothing(body: bytes) -> None:
    reading = read(body)
    assert reading.events == [] and reading.authenticated == 0 and reading.dropped == {"body_truncated": 1}


def test_garbage_after_the_entries_keeps_the_entries() -> None:
    body = batch(entry(), entry()) + b" trailing garbage"
    for chunk in CHUNKS:
        reading = read(body, chunk)
        assert len(reading.events) == 2 and reading.dropped == {"not_json": 1}


@pytest.mark.parametrize("body", [b"[1, 2]", b"5", b'"value"', b'{"value": 5}', b'{"value": {"a": 1}}', b"null"])
def test_json_that_is_not_a_batch_gives_nothing(body: bytes) -> None:
    reading = read(body, 1)
    assert reading.events == [] and reading.dropped == {"not_a_batch": 1}


def test_other_members_of_the_batch_are_ignored_however_they_look() -> None:
    body = json.dumps({"@odata.context": "x", "other": [[{"value": [entry()]}]], "value": [entry()],
                       "later": {"clientState": "wrong"}}).encode()
    reading = read(body, 1)
    assert len(reading.events) == 1 and not reading.dropped and not reading.wrong_client_state


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("wrong", ["wrong", "", CLIENT_STATE[:-1], CLIENT_STATE + " ", 5, ["x"], {"a": 1}])
def test_a_wrong_client_state_anywhere_refuses_the_batch_and_stops_reading(chunk: int | None, wrong: Any) -> None:
    body = batch(entry(), entry(clientState=wrong), *(entry() for _ in range(100)))
    reader = NotificationReader(CLIENT_STATE, "c")
    size = chunk or len(body)
    fed = 0
    while fed < len(body) and reader.feed(body[fed:fed + size]):
        fed += size
    reading = reader.close()
    assert reading.wrong_client_state and fed < len(body) // 2


def test_an_entry_without_client_state_is_dropped_not_refused() -> None:
    anonymous = entry("items")
    del anonymous["clientState"]
    nulled = entry("items", clientState=None)
    reading = read(batch(entry(), anonymous, nulled))
    assert len(reading.events) == 1 and reading.authenticated == 1 and not reading.wrong_client_state
    assert reading.dropped == {"no_client_state": 2} and reading.dropped_entities == {(COMPANY, "items")}
    alone = read(batch(anonymous))
    assert alone.authenticated == 0 and alone.events == []


def test_an_unset_client_state_matches_nothing() -> None:
    reader = NotificationReader(None, "c")
    reader.feed(batch(entry()))
    assert reader.close().wrong_client_state


def test_the_entry_limit_keeps_the_first_entries() -> None:
    reading = read(batch(*(entry() for _ in range(10))), 7, Limits(max_entries=4))
    assert len(reading.events) == 4 and reading.dropped == {"too_many_entries": 6} and reading.dropped_unknown


def test_the_body_limit_stops_reading_and_keeps_what_came_before() -> None:
    body = batch(*(entry() for _ in range(100)))
    limits = Limits(max_body_bytes=len(body) // 2)
    reader = NotificationReader(CLIENT_STATE, "c", limits)
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    taken = 0
    for chunk in chunks:
        taken += 1
        if not reader.feed(chunk):
            break
    reading = reader.close()
    assert taken < len(chunks) and reading.body_bytes == limits.max_body_bytes
    assert 40 <= len(reading.events) < 50 and reading.dropped == {"body_too_large": 1}


def test_a_huge_number_is_not_json_not_a_crash() -> None:
    reading = read(b'{"value": [{"n": ' + b"1" * 5000 + b"}]}")
    assert reading.dropped == {"not_json": 1}
    floats = read(batch(entry(n=1e308, m=-0.5, k=12345678901234)))
    assert len(floats.events) == 1


def test_deep_nesting_costs_linear_time_and_little_memory() -> None:
    """ijson's prefix-tracking interfaces keep every open container's path: quadratic in the depth."""
    depth = 200_000
    body = b'{"x": ' + b"[" * depth + b"]" * depth + b', "value": [' + json.dumps(entry()).encode() + b"]}"
    tracemalloc.start()
    started = time.perf_counter()
    try:
        reading = read(body, 65536)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(reading.events) == 1 and not reading.dropped
    assert peak < 32 * 1024 * 1024 and elapsed < 10, (peak, elapsed)


ENTRIES = st.lists(st.sampled_from(["good", "malformed", "unknown", "scalar", "anonymous", "large"]), max_size=12)


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(kinds=ENTRIES, cuts=st.lists(st.integers(min_value=0), max_size=20), truncate=st.booleans())
def test_the_chunks_never_change_the_reading(kinds: list[str], cuts: list[int], truncate: bool) -> None:
    made = {"good": lambda: entry(), "malformed": lambda: entry(change="x"),
            "unknown": lambda: entry(resource="?"), "scalar": lambda: 7,
            "anonymous": lambda: {k: v for k, v in entry().items() if k != "clientState"},
            "large": lambda: entry(padding="y" * 17_000)}
    body = batch(*(made[kind]() for kind in kinds))
    if truncate and len(body) > 2:
        body = body[: len(body) * 2 // 3]
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    reader = NotificationReader(CLIENT_STATE, "corr")
    for start, end in itertools.pairwise(points):
        reader.feed(body[start:end])
    assert summary(reader.close()) == summary(read(body))


# ---- the async driver over a request's stream --------------------------------------------------------------


async def stream(*chunks: bytes, then: BaseException | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    yield b""  # starlette ends every body with an empty chunk
    if then is not None:
        raise then


async def test_the_driver_reads_a_request_stream() -> None:
    body = batch(entry(), entry("items"))
    reading = await read_notifications(stream(body[:10], body[10:]), CLIENT_STATE, "c")
    assert len(reading.events) == 2 and not reading.dropped


async def test_a_client_that_leaves_is_a_truncated_body() -> None:
    body = batch(entry(), entry())
    reading = await read_notifications(stream(body[:-20], then=ClientDisconnect()), CLIENT_STATE, "c")
    assert len(reading.events) == 1 and reading.dropped == {"body_truncated": 1}


async def test_the_driver_stops_pulling_the_stream_at_the_body_limit_and_lets_others_run() -> None:
    pulled = 0
    others = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"value": ['
        while True:
            pulled += 1
            yield json.dumps(entry()).encode() + b","

    async def other() -> None:
        nonlocal others
        while True:
            others += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other())
    reading = await read_notifications(endless(), CLIENT_STATE, "c", Limits(max_body_bytes=2_000_000))
    ticker.cancel()
    assert reading.dropped == {"body_too_large": 1} and reading.body_bytes == 2_000_000
    assert pulled * 300 < 2_100_000 and len(reading.events) == pulled - 1
    assert others >= 5  # the loop was given back while the body was parsed
