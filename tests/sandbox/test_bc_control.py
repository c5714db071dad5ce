"""`/_sandbox/` on the BC port: seeding, the human user, faults, service protection, log, time, state."""

from __future__ import annotations

import time

import httpx

from sandbox.bc.runtime import BCSandbox
from tests.sandbox.conftest import COMPANY, HOOK_URL, ROOT, Receiver


async def test_seed_10k_fast(client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    response = await client.post("/_sandbox/seed", json={"customers": 10000, "items": 10000, "resources": 20,
                                                         "priceGroups": 3, "salespeople": 8})
    assert time.perf_counter() - started < 10
    created = response.json()["created"]
    assert created["customers"] == 10000 and created["items"] == 10000 and created["salesPrices"] == 30
    state = (await client.get("/_sandbox/state")).json()
    assert state["counts"]["customers"] == 10000 and state["counts"]["contacts"] == 20000
    person = (await client.get(f"{COMPANY}/contacts?$filter=type eq 'Person'&$top=1")).json()["value"][0]
    assert person["companyNumber"] and person["companyName"]


async def test_human_user_needs_no_if_match_and_notifies(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await client.post(f"{ROOT}/subscriptions", json={
        "notificationUrl": HOOK_URL, "resource": f"/api/v2.0/companies({COMPANY.split('(')[1][:-1]})/items",
        "clientState": "s"})
    created = await client.post("/_sandbox/entities/items", json={"displayName": "Lamp"})
    assert created.status_code == 201
    item_id = created.json()["id"]
    patched = await client.patch(f"/_sandbox/entities/items/{item_id}", json={"unitPrice": 9.5})
    assert patched.status_code == 200 and patched.json()["unitPrice"] == 9.5
    listed = await client.get("/_sandbox/entities/items", params={"filter": "displayName eq 'Lamp'"})
    assert listed.json()["count"] == 1
    await receiver.wait(1)
    assert [n["changeType"] for n in receiver.notifications[0]["value"]] == ["created", "updated"]
    assert (await client.delete(f"/_sandbox/entities/items/{item_id}")).status_code == 204
    missing = await client.get(f"/_sandbox/entities/items/{item_id}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "BadRequest_NotFound"


async def test_status_storm_and_latency(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/faults", json={"status": 429, "count": 2, "retry_after": 1})
    for _ in range(2):
        response = await client.get(f"{ROOT}/companies")
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "Application_TooManyRequests"
    assert (await client.get(f"{ROOT}/companies")).status_code == 200
    await client.post("/_sandbox/faults", json={"status": 503, "count": 1, "retry_after": 2})
    assert (await client.get(f"{ROOT}/companies")).status_code == 503
    await client.post("/_sandbox/faults", json={"latency_ms": 100})
    started = time.perf_counter()
    await client.get(f"{ROOT}/companies")
    assert time.perf_counter() - started >= 0.1
    assert (await client.delete("/_sandbox/faults")).json()["latency_ms"] == 0


async def test_request_budget(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/limits", json={"limit": 3, "window_seconds": 300, "reset": True})
    statuses = [(await client.get(f"{ROOT}/companies")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await client.get(f"{ROOT}/companies")
    assert int(limited.headers["retry-after"]) >= 1
    assert (await client.get("/_sandbox/limits")).json()["used"] == 3


async def test_request_log(client: httpx.AsyncClient) -> None:
    await client.get(f"{ROOT}/companies")
    await client.get(f"{COMPANY}/nothings?$top=1")
    log = (await client.get("/_sandbox/requests")).json()["value"]
    assert [(e["method"], e["status"]) for e in log] == [("GET", 200), ("GET", 404)]
    assert log[1]["path"].endswith("/nothings?$top=1") or log[1]["path"].endswith("/nothings?%24top=1")
    assert (await client.delete("/_sandbox/requests")).status_code == 204
    assert (await client.get("/_sandbox/requests")).json()["value"] == []


async def test_time_control(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    before = (await client.get("/_sandbox/time")).json()
    after = (await client.post("/_sandbox/time", json={"advance_seconds": 3600, "time_factor": 0.5})).json()
    assert after["offset_seconds"] == before["offset_seconds"] + 3600 and bc.clock.time_factor == 0.5
    customer = (await client.post("/_sandbox/entities/customers", json={"displayName": "Later"})).json()
    assert customer["lastModifiedDateTime"][:19] > before["now"][:19]


async def test_reset(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/seed", json={"customers": 3})
    await client.post("/_sandbox/reset")
    assert (await client.get("/_sandbox/state")).json()["counts"]["customers"] == 0


async def test_seed_twice_adds(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/seed", json={"customers": 5})
    await client.post("/_sandbox/seed", json={"customers": 5, "salespeople": 0})
    counts = (await client.get("/_sandbox/state")).json()["counts"]
    assert counts["customers"] == 10 and counts["contacts"] == 20 and counts["salespeoplePurchasers"] == 5
