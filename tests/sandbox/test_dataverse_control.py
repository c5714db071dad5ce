"""Dataverse stand-in: `/_sandbox` control endpoints (acting as a human, seed, faults, logs)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

try:
    from tests.sandbox.dataverse_helpers import API, Env, entity_id, make_env, register_webhook
except ImportError:  # tests/sandbox collected as a rootless directory
    from dataverse_helpers import API, Env, entity_id, make_env, register_webhook  # type: ignore[no-redef]

from sandbox.dataverse import identity


@pytest.fixture
async def dv() -> AsyncIterator[Env]:
    async with make_env() as env:
        yield env


async def test_overview_names_the_users(dv: Env) -> None:
    body = (await dv.control.get("")).json()
    assert body["salesperson_id"] == identity.SALESPERSON_ID
    assert body["application_user_id"] == (await dv.service.get(f"{API}/WhoAmI")).json()["UserId"]
    assert body["rows"]["account"] == 0


async def test_seed(dv: Env) -> None:
    r = await dv.control.post("/seed", json={"users": 5, "disabled_users": 2, "currencies": 2, "unit_groups": 3,
                                             "accounts": 4, "contacts_per_account": 2, "products": 3})
    created = r.json()["created"]
    assert [len(created[k]) for k in ("systemusers", "transactioncurrencies", "uomschedules", "accounts",
                                      "contacts", "products")] == [7, 2, 3, 4, 8, 3]
    users = (await dv.service.get(f"{API}/systemusers?$filter=isdisabled eq true")).json()["value"]
    assert len(users) == 2
    licensed = (await dv.service.get(f"{API}/systemusers?$filter=isdisabled eq false and islicensed eq true "
                                     "and isintegrationuser eq false")).json()["value"]
    assert 4 <= len(licensed) <= 6  # the salesperson + seeded, minus the unlicensed ones
    products = (await dv.service.get(f"{API}/products?$filter=statecode eq 0")).json()["value"]
    assert len(products) == 3
    contacts = (await dv.service.get(f"{API}/contacts?$select=_parentcustomerid_value")).json()["value"]
    assert all(c["_parentcustomerid_value"] in created["accounts"] for c in contacts)
    assert dv.receiver.requests == []  # seeding fires no webhooks


async def test_acting_as_another_user(dv: Env) -> None:
    other = (await dv.control.post("/seed", json={"users": 1})).json()["created"]["systemusers"][0]
    await register_webhook(dv.service, "account", "Create")
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "Mine"}, headers={"x-sandbox-user": other}))
    await dv.drain()
    assert dv.receiver.bodies[0]["UserId"] == other
    row = (await dv.human.get(f"{API}/accounts?$select=_ownerid_value")).json()["value"][0]
    assert row["_ownerid_value"] == other


async def test_status_storm_with_retry_after(dv: Env) -> None:
    storm = {"status": 429, "count": 2, "retry_after": 1, "path_contains": "accounts"}
    r = await dv.control.post("/faults", json=storm)
    assert r.json()["rules"][0]["count"] == 2
    assert (await dv.service.get(f"{API}/WhoAmI")).status_code == 200  # another path: untouched
    for _ in range(2):
        r = await dv.service.get(f"{API}/accounts")
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "0x80072322"
    assert (await dv.service.get(f"{API}/accounts")).status_code == 200


async def test_5xx_burst_latency_and_clear(dv: Env) -> None:
    await dv.control.post("/faults", json={"status": 503, "count": 1, "method": "POST"})
    assert (await dv.service.get(f"{API}/accounts")).status_code == 200
    assert (await dv.service.post(f"{API}/accounts", json={"name": "A"})).status_code == 503
    assert (await dv.service.post(f"{API}/accounts", json={"name": "A"})).status_code == 204
    await dv.control.post("/faults", json={"latency_ms": 150})
    started = time.perf_counter()
    await dv.service.get(f"{API}/WhoAmI")
    assert time.perf_counter() - started >= 0.15
    assert (await dv.control.delete("/faults")).status_code == 204
    assert (await dv.control.get("/faults")).json() == {"latency_ms": 0, "drop_webhooks": 0,
                                                        "webhook_latency_ms": 0, "rules": []}


async def test_request_log(dv: Env) -> None:
    await dv.service.get(f"{API}/WhoAmI")
    await dv.service.post(f"{API}/accounts?tag=t1", json={"name": "A"}, headers={"Prefer": "return=representation"})
    await dv.service.get(f"{API}/accounts(00000000-0000-4000-8000-000000000001)")
    log = (await dv.control.get("/requests")).json()["value"]
    assert [(e["method"], e["status"]) for e in log] == [("GET", 200), ("POST", 201), ("GET", 404)]
    assert log[1]["query"] == "tag=t1" and log[1]["prefer"] == "return=representation"
    assert log[0]["user_id"] == (await dv.service.get(f"{API}/WhoAmI")).json()["UserId"]
    assert len((await dv.control.get("/requests", params={"path_contains": "accounts"})).json()["value"]) == 2
    assert (await dv.control.delete("/requests")).status_code == 204
    assert (await dv.control.get("/requests")).json()["value"] == []


async def test_webhook_log(dv: Env) -> None:
    await register_webhook(dv.service, "account", "Create")
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    assert (await dv.control.post("/webhooks/drain")).json() == {"idle": True}
    [entry] = (await dv.control.get("/webhooks")).json()["value"]
    assert entry["outcome"] == "delivered" and "body" not in entry and entry["entity"] == "account"
    [entry] = (await dv.control.get("/webhooks", params={"body": "true"})).json()["value"]
    assert entry["body"]["MessageName"] == "Create"
    assert (await dv.control.delete("/webhooks")).status_code == 204
    assert (await dv.control.get("/webhooks")).json()["value"] == []


async def test_limits_endpoint(dv: Env) -> None:
    assert (await dv.control.get("/limits")).json() == {"requests": 6000, "window_seconds": 300.0}
    r = await dv.control.post("/limits", json={"requests": 10, "window_seconds": 60})
    assert r.json() == {"requests": 10, "window_seconds": 60.0}
