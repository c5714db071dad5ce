"""Dataverse client: tag on writes, If-Match, return=representation, paging, 404s (respx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from service.connectors.budget import RequestBudget
from service.connectors.dataverse import DataverseClient
from service.connectors.http import ApiTransport, NotFound, PreconditionFailed
from tests.unit.test_connector_http import FakeTokens

API = "https://contoso.crm.dynamics.com/api/data/v9.2"
ID = "7d577253-3ef0-4a0a-bb7f-8335c2596e70"


@pytest.fixture
async def dv() -> AsyncIterator[DataverseClient]:
    client = DataverseClient(API, "https://contoso.crm.dynamics.com/.default", FakeTokens(),
                             RequestBudget(1000, 60), tag="bcsync")
    yield client
    await client.aclose()


@respx.mock
async def test_writes_carry_the_tag_and_ask_for_the_row(dv: DataverseClient) -> None:
    created = respx.post(f"{API}/accounts", params={"tag": "bcsync"}).mock(
        return_value=httpx.Response(201, json={"accountid": ID, "@odata.etag": 'W/"1"'}))
    updated = respx.patch(f"{API}/accounts({ID})", params={"tag": "bcsync"}).mock(
        return_value=httpx.Response(200, json={"accountid": ID, "@odata.etag": 'W/"2"'}))
    deleted = respx.delete(f"{API}/accounts({ID})", params={"tag": "bcsync"}).mock(return_value=httpx.Response(204))
    assert (await dv.create("accounts", {"name": "A"}))["accountid"] == ID
    assert created.calls.last.request.headers["Prefer"] == "return=representation"
    assert json.loads(created.calls.last.request.content) == {"name": "A"}
    assert (await dv.update("accounts", ID, {"name": "B"}, 'W/"1"'))["@odata.etag"] == 'W/"2"'
    request = updated.calls.last.request
    assert request.headers["If-Match"] == 'W/"1"' and request.headers["Prefer"] == "return=representation"
    await dv.update("accounts", ID, {"name": "C"})
    assert updated.calls.last.request.headers["If-Match"] == "*"  # never an accidental upsert
    assert await dv.delete("accounts", ID) is True and deleted.called


@respx.mock
async def test_no_tag_no_query() -> None:
    route = respx.post(f"{API}/accounts").mock(return_value=httpx.Response(201, json={"accountid": ID}))
    client = DataverseClient(API, "s", FakeTokens())
    await client.create("accounts", {"name": "A"})
    assert route.calls.last.request.url.query == b""
    await client.aclose()


@respx.mock
async def test_create_answering_204_reads_the_row_back(dv: DataverseClient) -> None:
    respx.post(f"{API}/accounts").mock(return_value=httpx.Response(
        204, headers={"OData-EntityId": f"{API}/accounts({ID})"}))
    respx.get(f"{API}/accounts({ID})").mock(return_value=httpx.Response(200, json={"accountid": ID}))
    assert await dv.create("accounts", {"name": "A"}) == {"accountid": ID}


@respx.mock
async def test_stale_etag_and_missing_row(dv: DataverseClient) -> None:
    respx.patch(f"{API}/accounts({ID})").mock(side_effect=[
        httpx.Response(412, json={"error": {"code": "0x80060882", "message": "The version of the existing record "
                                            "doesn't match the RowVersion property provided."}}),
        httpx.Response(404, json={"error": {"code": "0x80040217", "message": "account Does Not Exist"}})])
    with pytest.raises(PreconditionFailed):
        await dv.update("accounts", ID, {"name": "B"}, 'W/"1"')
    with pytest.raises(NotFound):
        await dv.update("accounts", ID, {"name": "B"})


@respx.mock
async def test_get_select_404_and_delete_gone(dv: DataverseClient) -> None:
    found = respx.get(f"{API}/accounts({ID})", params={"$select": "name,accountnumber"}).mock(
        return_value=httpx.Response(200, json={"accountid": ID, "name": "A"}))
    respx.get(f"{API}/contacts({ID})").mock(return_value=httpx.Response(404, json={"error": {"code": "0x80040217"}}))
    respx.delete(f"{API}/contacts({ID})").mock(return_value=httpx.Response(404))
    assert (await dv.get("accounts", ID, select=["name", "accountnumber"]))["name"] == "A"  # type: ignore[index]
    assert found.called
    assert await dv.get("contacts", ID) is None
    assert await dv.delete("contacts", ID) is False


@respx.mock
async def test_list_pages(dv: DataverseClient) -> None:
    # Routes match in order, and the next link carries $orderby too: the more specific route first.
    respx.get(f"{API}/accounts", params={"$skiptoken": "x"}).mock(return_value=httpx.Response(
        200, json={"value": [{"n": 2}]}))
    first = respx.get(f"{API}/accounts", params={"$orderby": "modifiedon asc"}).mock(return_value=httpx.Response(
        200, json={"value": [{"n": 1}], "@odata.nextLink": f"{API}/accounts?$orderby=modifiedon%20asc&$skiptoken=x"}))
    rows = [r async for r in dv.list("accounts", orderby="modifiedon asc", page_size=1)]
    assert rows == [{"n": 1}, {"n": 2}]
    assert first.calls.last.request.headers["Prefer"] == "odata.maxpagesize=1"
    assert first.calls.last.request.headers["OData-Version"] == "4.0"


@respx.mock
async def test_action(dv: DataverseClient) -> None:
    route = respx.post(f"{API}/FulfillSalesOrder", params={"tag": "bcsync"}).mock(return_value=httpx.Response(204))
    body = {"OrderClose": {"salesorderid@odata.bind": f"/salesorders({ID})"}, "Status": -1}
    assert await dv.action("FulfillSalesOrder", body) is None
    assert json.loads(route.calls.last.request.content) == body


@respx.mock
async def test_429_is_ridden_out(dv: DataverseClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ApiTransport, "backoff_base", 0.001)
    route = respx.get(f"{API}/WhoAmI").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "0x80072322", "message": "x"}}),
        httpx.Response(200, json={"UserId": "ABC"})])
    assert await dv.who_am_i() == "abc" and route.call_count == 2
