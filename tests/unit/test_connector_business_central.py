"""Business Central client: URLs, paging, ETags, 404s, subscriptions (respx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from service.connectors.budget import RequestBudget
from service.connectors.business_central import BusinessCentralClient
from service.connectors.http import PreconditionFailed
from tests.unit.test_connector_http import COMPANY, ROOT, FakeTokens

API = f"{ROOT}/api/v2.0"
C = f"{API}/companies({COMPANY})"
CUSTOM = f"{ROOT}/api/bcsync/integration/v1.0/companies({COMPANY})"
ETAG = 'W/"JzQ0O0VnQUFBQUo3QlRZQU5RQUFBQUFBOzE7Jw=="'


@pytest.fixture
async def bc() -> AsyncIterator[BusinessCentralClient]:
    client = BusinessCentralClient(ROOT + "/", COMPANY, "https://api.businesscentral.dynamics.com/.default",
                                   FakeTokens(), RequestBudget(1000, 60))
    yield client
    await client.aclose()


@respx.mock
async def test_list_follows_next_links_with_the_page_size(bc: BusinessCentralClient) -> None:
    first = respx.get(f"{C}/customers", params={"$filter": "blocked eq ' '", "$select": "id,number"}).mock(
        return_value=httpx.Response(200, json={"value": [{"id": "1"}, {"id": "2"}],
                                               "@odata.nextLink": f"{C}/customers?$skiptoken=abc"}))
    second = respx.get(f"{C}/customers", params={"$skiptoken": "abc"}).mock(
        return_value=httpx.Response(200, json={"value": [{"id": "3"}]}))
    rows = [r async for r in bc.list("customers", filter="blocked eq ' '", select=["id", "number"], page_size=2)]
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert first.calls.last.request.headers["Prefer"] == "odata.maxpagesize=2"
    assert second.calls.last.request.headers["Prefer"] == "odata.maxpagesize=2"
    assert "%20eq%20" in str(first.calls.last.request.url)  # spaces as %20, not +


@respx.mock
async def test_custom_api_url(bc: BusinessCentralClient) -> None:
    route = respx.get(f"{CUSTOM}/resources").mock(return_value=httpx.Response(200, json={"value": [{"id": "r"}]}))
    assert [r async for r in bc.list("resources", api="bcsync/integration/v1.0")] == [{"id": "r"}]
    assert route.called


@respx.mock
async def test_get_keeps_the_etag_and_404_is_none(bc: BusinessCentralClient) -> None:
    respx.get(f"{C}/customers(1)", params={"$expand": "contactsInformation"}).mock(
        return_value=httpx.Response(200, json={"@odata.etag": ETAG, "id": "1"}))
    respx.get(f"{C}/customers(2)").mock(return_value=httpx.Response(404, json={"error": {
        "code": "BadRequest_NotFound", "message": "The customer does not exist."}}))
    assert (await bc.get("customers", "1", expand="contactsInformation"))["@odata.etag"] == ETAG  # type: ignore[index]
    assert await bc.get("customers", "2") is None


@respx.mock
async def test_create_update_delete(bc: BusinessCentralClient) -> None:
    created = respx.post(f"{C}/customers").mock(return_value=httpx.Response(201, json={"id": "1", "@odata.etag": ETAG}))
    patched = respx.patch(f"{C}/customers(1)").mock(return_value=httpx.Response(200, json={"id": "1"}))
    deleted = respx.delete(f"{C}/customers(1)").mock(return_value=httpx.Response(204))
    gone = respx.delete(f"{C}/customers(2)").mock(return_value=httpx.Response(404))
    assert (await bc.create("customers", {"displayName": "A"}))["id"] == "1"
    assert json.loads(created.calls.last.request.content) == {"displayName": "A"}
    await bc.update("customers", "1", {"displayName": "B"}, ETAG)
    assert patched.calls.last.request.headers["If-Match"] == ETAG
    assert await bc.delete("customers", "1", ETAG) is True
    assert deleted.calls.last.request.headers["If-Match"] == ETAG
    assert await bc.delete("customers", "2") is False
    assert gone.calls.last.request.headers["If-Match"] == "*"


@respx.mock
@pytest.mark.parametrize("status,code", [(409, "Request_EntityChanged"), (412, "")])
async def test_stale_etag_is_precondition_failed(bc: BusinessCentralClient, status: int, code: str) -> None:
    respx.patch(f"{C}/customers(1)").mock(return_value=httpx.Response(status, json={"error": {
        "code": code, "message": "Another user has already changed the record."}}))
    with pytest.raises(PreconditionFailed) as raised:
        await bc.update("customers", "1", {"displayName": "B"}, ETAG)
    assert raised.value.status == status


@respx.mock
async def test_bound_action_and_companies(bc: BusinessCentralClient) -> None:
    action = respx.post(f"{C}/salesOrders(9)/Microsoft.NAV.shipAndInvoice").mock(return_value=httpx.Response(204))
    respx.get(f"{API}/companies").mock(return_value=httpx.Response(200, json={"value": [{"id": COMPANY}]}))
    await bc.bound_action("salesOrders", "9", "shipAndInvoice")
    assert action.called
    assert await bc.companies() == [{"id": COMPANY}]


@respx.mock
async def test_subscriptions(bc: BusinessCentralClient) -> None:
    sub = {"subscriptionId": "abc", "notificationUrl": "https://hook", "resource": f"companies({COMPANY})/customers",
           "clientState": "s", "@odata.etag": 'W/"1"', "expirationDateTime": "2030-01-01T00:00:00Z"}
    respx.get(f"{API}/subscriptions").mock(return_value=httpx.Response(200, json={"value": [sub]}))
    created = respx.post(f"{API}/subscriptions").mock(return_value=httpx.Response(201, json=sub))
    custom = respx.post(f"{ROOT}/api/bcsync/integration/v1.0/subscriptions").mock(
        return_value=httpx.Response(201, json=sub))
    renewed = respx.patch(f"{API}/subscriptions('abc')").mock(return_value=httpx.Response(200, json=sub))
    deleted = respx.delete(f"{API}/subscriptions('abc')").mock(return_value=httpx.Response(204))
    assert await bc.list_subscriptions() == [sub]
    await bc.create_subscription("https://hook", f"companies({COMPANY})/customers", "s")
    assert json.loads(created.calls.last.request.content) == {
        "notificationUrl": "https://hook", "resource": f"companies({COMPANY})/customers", "clientState": "s"}
    # BC's docs: a custom API's resource is subscribed at that API's own subscriptions endpoint.
    await bc.create_subscription("https://hook", f"api/bcsync/integration/v1.0/companies({COMPANY})/resources", "s")
    assert custom.called
    await bc.renew_subscription(sub)
    assert renewed.calls.last.request.headers["If-Match"] == 'W/"1"'
    assert json.loads(renewed.calls.last.request.content) == {
        "notificationUrl": "https://hook", "resource": sub["resource"], "clientState": "s"}
    await bc.delete_subscription("abc")
    assert deleted.called
