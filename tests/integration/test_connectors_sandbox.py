"""The connectors against the live sandbox (real ports, real MSAL over HTTPS with the sandbox's CA):
CRUD, paging over 2,500 rows, stale ETags, a 429 storm, and the request budget as the server saw it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from sandbox.config import DEMO_COMPANY_ID
from service.connectors.budget import RequestBudget
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.factory import make_clients, token_provider
from service.connectors.http import NotFound, PreconditionFailed
from service.settings import Settings
from tests.sandbox.conftest import Live, live  # noqa: F401  (the module-scoped sandbox fixture)


def live_settings(sandbox: Live, **overrides: Any) -> Settings:
    c = sandbox.config
    values: dict[str, Any] = {
        "tenant_id": c.tenant_id, "client_id": c.client_id, "client_secret": c.client_secret,
        "authority_host": f"https://127.0.0.1:{c.entra_port}",
        "bc_url": f"http://127.0.0.1:{c.bc_port}/v2.0/{{tenant}}/{{environment}}",
        "bc_environment": c.environment, "bc_company_id": c.company_id,
        "dataverse_url": f"http://127.0.0.1:{c.dataverse_port}", "integration_tag": "bcsync-test-tag-0123",
    }
    return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def ca_bundle(live: Live) -> Iterator[None]:  # noqa: F811
    """MSAL (requests) trusts the sandbox's self-signed CA through REQUESTS_CA_BUNDLE."""
    before = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = live.config.ca_file
    yield
    if before is None:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = before


@pytest.fixture
async def control(live: Live, ca_bundle: None) -> AsyncIterator[dict[str, httpx.AsyncClient]]:  # noqa: F811
    """`/_sandbox` of both systems, reset before each test."""
    c = live.config
    async with (httpx.AsyncClient(base_url=f"http://127.0.0.1:{c.bc_port}/_sandbox") as bc,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{c.dataverse_port}/_sandbox") as dv):
        await bc.post("/reset")
        await bc.post("/limits", json={"limit": 6000, "window_seconds": 300, "reset": True})
        await dv.delete("/faults")
        await dv.post("/limits", json={"requests": 6000, "window_seconds": 300})
        yield {"bc": bc, "dv": dv}
        await bc.delete("/faults")
        await dv.delete("/faults")


@pytest.fixture
async def clients(live: Live, control: dict[str, httpx.AsyncClient]  # noqa: F811
                  ) -> AsyncIterator[tuple[BusinessCentralClient, DataverseClient]]:
    bc, dv = make_clients(live_settings(live))
    yield bc, dv
    await bc.aclose()
    await dv.aclose()


async def test_bc_customer_crud_with_etags(clients: tuple[BusinessCentralClient, DataverseClient]) -> None:
    bc, _ = clients
    assert [c["id"] for c in await bc.companies()] == [DEMO_COMPANY_ID]
    created = await bc.create("customers", {"displayName": "Adatum", "city": "Seattle"})
    got = await bc.get("customers", created["id"])
    assert got is not None and got["displayName"] == "Adatum" and got["@odata.etag"] == created["@odata.etag"]
    updated = await bc.update("customers", created["id"], {"city": "Redmond"}, got["@odata.etag"])
    assert updated["city"] == "Redmond" and updated["@odata.etag"] != got["@odata.etag"]
    with pytest.raises(PreconditionFailed) as stale:
        await bc.update("customers", created["id"], {"city": "Bellevue"}, got["@odata.etag"])
    assert stale.value.code == "Request_EntityChanged"
    with pytest.raises(PreconditionFailed):
        await bc.delete("customers", created["id"], got["@odata.etag"])
    assert await bc.delete("customers", created["id"], updated["@odata.etag"]) is True
    assert await bc.get("customers", created["id"]) is None
    assert await bc.delete("customers", created["id"]) is False


async def test_bc_custom_api_and_filter(clients: tuple[BusinessCentralClient, DataverseClient],
                                        control: dict[str, httpx.AsyncClient]) -> None:
    bc, _ = clients
    await control["bc"].post("/seed", json={"customers": 5, "resources": 3, "seed": 1})
    resources = [r async for r in bc.list("resources", api="bcsync/integration/v1.0")]
    assert len(resources) == 3
    ordered = [c async for c in bc.list("customers", orderby="number", select=["id", "number"])]
    first = ordered[0]
    hits = [c async for c in bc.list("customers", filter=f"number eq '{first['number']}'")]
    assert [h["id"] for h in hits] == [first["id"]]


async def test_bc_paging_over_2500_rows(clients: tuple[BusinessCentralClient, DataverseClient],
                                        control: dict[str, httpx.AsyncClient]) -> None:
    bc, _ = clients
    await control["bc"].post("/seed", json={"customers": 2500, "contactsPerCustomer": 0, "seed": 7})
    await control["bc"].delete("/requests")
    rows = [r async for r in bc.list("customers", select=["id"], page_size=1000)]
    assert len({r["id"] for r in rows}) == 2500
    log = (await control["bc"].get("/requests")).json()["value"]
    assert len([e for e in log if "/customers" in e["path"]]) == 3


async def test_dataverse_account_crud_with_etags_and_tag(clients: tuple[BusinessCentralClient, DataverseClient],
                                                         control: dict[str, httpx.AsyncClient]) -> None:
    _, dv = clients
    user = await dv.who_am_i()
    account = await dv.create("accounts", {"name": "Fabrikam", "telephone1": "555"})
    got = await dv.get("accounts", account["accountid"], select=["name", "telephone1"])
    assert got is not None and got["name"] == "Fabrikam"
    updated = await dv.update("accounts", account["accountid"], {"telephone1": "556"}, got["@odata.etag"])
    assert updated["telephone1"] == "556"
    with pytest.raises(PreconditionFailed):
        await dv.update("accounts", account["accountid"], {"telephone1": "557"}, got["@odata.etag"])
    assert await dv.delete("accounts", account["accountid"]) is True
    with pytest.raises(NotFound):  # If-Match: * → no accidental upsert of a deleted row
        await dv.update("accounts", account["accountid"], {"telephone1": "558"})
    assert await dv.get("accounts", account["accountid"]) is None
    assert await dv.delete("accounts", account["accountid"]) is False
    log = (await control["dv"].get("/requests", params={"path_contains": "accounts"})).json()["value"]
    writes = [e for e in log if e["method"] != "GET"]
    assert writes and all("tag=bcsync-test-tag-0123" in e["query"] for e in writes)
    assert all(e["user_id"] == user for e in log)


async def test_dataverse_paging_over_2500_rows(clients: tuple[BusinessCentralClient, DataverseClient],
                                               control: dict[str, httpx.AsyncClient]) -> None:
    _, dv = clients
    await control["dv"].post("/seed", json={"accounts": 2500, "contacts_per_account": 0, "seed": 3})
    await control["dv"].delete("/requests")
    rows = [r async for r in dv.list("accounts", select=["accountid"], orderby="name asc", page_size=1000)]
    assert len({r["accountid"] for r in rows}) >= 2500
    log = (await control["dv"].get("/requests", params={"path_contains": "accounts"})).json()["value"]
    assert [e["prefer"] for e in log] == ["odata.maxpagesize=1000"] * len(log) and len(log) >= 3


async def test_a_429_storm_is_ridden_out(clients: tuple[BusinessCentralClient, DataverseClient],
                                         control: dict[str, httpx.AsyncClient]) -> None:
    bc, dv = clients
    await control["bc"].post("/faults", json={"status": 429, "count": 3, "retry_after": 1})
    await control["dv"].post("/faults", json={"status": 429, "count": 3, "retry_after": 1,
                                              "path_contains": "accounts"})
    await control["bc"].delete("/requests")
    started = asyncio.get_running_loop().time()
    customer, account = await asyncio.gather(bc.create("customers", {"displayName": "Storm"}),
                                             dv.create("accounts", {"name": "Storm"}))
    assert customer["displayName"] == "Storm" and account["name"] == "Storm"
    assert asyncio.get_running_loop().time() - started >= 2.9  # three Retry-After: 1 in a row
    statuses = [e["status"] for e in (await control["bc"].get("/requests")).json()["value"]]
    assert statuses == [429, 429, 429, 201]
    log = (await control["dv"].get("/requests", params={"path_contains": "accounts"})).json()["value"]
    assert [e["status"] for e in log][-4:] == [429, 429, 429, 201]


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_the_budget_is_never_exceeded(live: Live, control: dict[str, httpx.AsyncClient]) -> None:  # noqa: F811
    """60 concurrent reads under a budget of 20 per second: the server's log never shows more than 20 in
    any second, and the server (given a slightly shorter window, for clock skew) never had to say 429."""
    settings = live_settings(live)
    tokens = token_provider(settings)
    limit, window = 20, 1.0
    bc = BusinessCentralClient(settings.bc_service_root, DEMO_COMPANY_ID, settings.bc_scope, tokens,
                               RequestBudget(limit, window))
    dv = DataverseClient(settings.dataverse_api, settings.dataverse_token_scope, tokens, RequestBudget(limit, window))
    await control["bc"].post("/seed", json={"customers": 3, "seed": 2})
    await bc.companies()  # token fetched before the clock starts
    await dv.who_am_i()
    await control["bc"].post("/limits", json={"limit": limit, "window_seconds": window - 0.05, "reset": True})
    await control["dv"].post("/limits", json={"requests": limit, "window_seconds": window - 0.05})
    await asyncio.sleep(window)
    await control["bc"].delete("/requests")
    await control["dv"].delete("/requests")
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(bc.companies() for _ in range(60)), *(dv.who_am_i() for _ in range(60)))
    assert asyncio.get_running_loop().time() - started >= 2 * window  # 60 at 20/s: three windows
    log = (await control["bc"].get("/requests")).json()["value"]
    assert len(log) == 60 and {e["status"] for e in log} == {200}
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() for e in log]
    assert most_in_any_window(times, window - 0.01) <= limit
    dv_log = (await control["dv"].get("/requests")).json()["value"]
    assert len(dv_log) == 60 and {e["status"] for e in dv_log} == {200}
    await bc.aclose()
    await dv.aclose()
