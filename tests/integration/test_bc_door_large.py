"""The Business Central door with large and partly malformed batches, against the real api over HTTP on SQLite
and PostgreSQL: every usable entry is stored, the rest is covered by a catch-up, the answer is never a 4xx
that would make BC delete its subscriptions (only 401 for another clientState)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import func, select

from schemas.mappings import BY_NAME
from service.metrics import WEBHOOK_ENTRIES_DROPPED
from service.store import jobs
from service.store.models import OutboxEvent
from tests.harness import CLIENT_STATE, make_settings, running_api, wait_for

BC = "/webhooks/business-central"
COMPANY = "f64eba74-dacd-4854-a584-1834f68cfc3a"
SUBSCRIPTIONS = {"customers": "CUSTOMER", "items": "ITEM-PRODUCT", "salesOrders": "SALESORDER-ORDER"}
EVERY_BC_MAPPING = {name for name, mapping in BY_NAME.items() if mapping.bc_entities}


def entry(entity: str, **fields: Any) -> dict[str, Any]:
    return {"subscriptionId": f"sub-{entity}", "clientState": CLIENT_STATE, "expirationDateTime": "2025-11-28T21:50:00Z",
            "resource": f"api/v2.0/companies({COMPANY})/{entity}({uuid.uuid4()})", "changeType": "updated",
            "lastModifiedDateTime": "2025-11-25T21:49:12.57Z"} | fields


def batch(per_entity: int, bad: dict[str, Any] | None = None, at: int = 0) -> list[dict[str, Any]]:
    """`per_entity` entries of each subscription, grouped as BC groups them; `bad` in place of entry `at`."""
    value = [entry(entity) for entity in SUBSCRIPTIONS for _ in range(per_entity)]
    if bad is not None:
        value[at] = bad
    return value


async def stored_rows(app: Any) -> int:
    async with app.state.db.session() as session:
        return int((await session.execute(select(func.count()).select_from(OutboxEvent))).scalar_one())


async def requested(app: Any) -> set[str]:
    async with app.state.db.session() as session:
        return {name for name, row in (await jobs.catch_up_states(session)).items() if row.requested_at is not None}


def dropped(reason: str) -> float:
    return WEBHOOK_ENTRIES_DROPPED.labels("business_central", reason)._value.get()


MALFORMED = {
    # A change type BC does not send: the entity set is known, so only its mapping catches up.
    "known entity": (lambda: entry("salesOrders", changeType="renamed"), {"SALESORDER-ORDER"}),
    # A resource that does not parse: nobody knows which entity set, so every BC mapping catches up.
    "unknown entity": (lambda: entry("items", resource="api/v2.0/companies(oops)/items(1)"), EVERY_BC_MAPPING),
}


@pytest.mark.parametrize("kind", MALFORMED)
async def test_3000_entries_with_one_malformed_store_2999_events_and_ask_a_catch_up(
        rabbit: aio_pika.abc.AbstractChannel, namespace: str, database_url: str, kind: str) -> None:
    make_bad, expected_catch_up = MALFORMED[kind]
    value = batch(1000, make_bad(), at=1717)  # among the items
    body = json.dumps({"value": value}).encode()
    assert len(value) == 3000 and len(body) > 900_000
    before = dropped("malformed")
    # The workers' control exchange: the door wakes their catch-up job.
    control = await rabbit.declare_exchange(jobs.control_exchange(namespace), aio_pika.ExchangeType.FANOUT,
                                            durable=False, auto_delete=True)
    woken = await rabbit.declare_queue(exclusive=True)
    await woken.bind(control)
    async with running_api(make_settings(database_url, namespace)) as (base, app), \
            httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post(BC, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer | {"detail": None} == {"outcome": "accepted", "detail": None, "events": 2999, "new": 2999,
                                             "duplicates": 0, "ignored": 0, "dropped": 1}
        assert await stored_rows(app) == 2999
        assert await requested(app) == expected_catch_up
        again = await http.post(BC, content=body)  # BC's retry of the same delivery: nothing new
        assert again.status_code == 202 and again.json()["new"] == 0 and again.json()["duplicates"] == 2999
        assert await stored_rows(app) == 2999
    assert dropped("malformed") == before + 2

    messages: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def kicked() -> bool:
        message = await woken.get(fail=False)
        if message is not None:
            messages.append(message)
        return bool(messages)

    await wait_for(kicked)
    assert json.loads(messages[0].body) == {"kind": "catch-up"}


async def test_a_body_of_several_mib_is_accepted(rabbit: aio_pika.abc.AbstractChannel, namespace: str,
                                                 database_url: str) -> None:
    value = batch(5000)  # 15,000 entries, about 4.5 MiB
    body = json.dumps({"value": value}).encode()
    assert len(body) > 4 * 1024 * 1024

    async def chunks() -> Any:  # without Content-Length, as a proxy may forward it
        for start in range(0, len(body), 65536):
            yield body[start:start + 65536]

    async with running_api(make_settings(database_url, namespace)) as (base, app), \
            httpx.AsyncClient(base_url=base, timeout=120) as http:
        response = await http.post(BC, content=chunks())
        assert response.status_code == 202, response.text
        assert response.json()["events"] == response.json()["new"] == 15_000 and response.json()["dropped"] == 0
        assert await stored_rows(app) == 15_000
        assert await requested(app) == set()  # nothing dropped, nothing to catch up


async def test_a_wrong_client_state_in_a_large_batch_is_401_and_stores_nothing(
        rabbit: aio_pika.abc.AbstractChannel, namespace: str, database_url: str) -> None:
    value = batch(1000, entry("items", clientState="someone-else"), at=2500)
    async with running_api(make_settings(database_url, namespace)) as (base, app), \
            httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post(BC, json={"value": value})
        assert response.status_code == 401 and response.json()["outcome"] == "unauthorized"
        assert CLIENT_STATE not in response.text and "someone-else" not in response.text
        assert await stored_rows(app) == 0
        assert await requested(app) == set()


async def test_a_body_cut_off_keeps_its_entries_and_catches_up_everything(
        rabbit: aio_pika.abc.AbstractChannel, namespace: str, sqlite_url: str) -> None:
    body = json.dumps({"value": batch(10)}).encode()
    cut = body[: body.rindex(b"{")]  # the last entry and the end are missing
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), \
            httpx.AsyncClient(base_url=base) as http:
        response = await http.post(BC, content=cut)
        assert response.status_code == 202 and response.json()["events"] == 29 and response.json()["dropped"] == 1
        assert await stored_rows(app) == 29
        assert await requested(app) == EVERY_BC_MAPPING
