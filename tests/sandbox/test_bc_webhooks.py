"""BC webhooks: handshake (create and renew), notifications, merging, collections, retries, deletion."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from sandbox.bc.runtime import BCSandbox
from tests.sandbox.conftest import COMPANY, HOOK_URL, ROOT, Receiver, make

COMPANY_ID = COMPANY.split('(')[1].rstrip(')')
# As page "Working with webhooks in Dynamics 365 Business Central" posts it.
RESOURCE = f"/api/v2.0/companies({COMPANY_ID})/customers"
CUSTOM_ROOT = ROOT.replace("/api/v2.0", "/api/bcsync/integration/v1.0")


async def subscribe(client: httpx.AsyncClient, resource: str = RESOURCE, url: str = HOOK_URL) -> httpx.Response:
    return await client.post(f"{ROOT}/subscriptions", json={"notificationUrl": url, "resource": resource,
                                                            "clientState": "state-1"})


async def test_subscribe_with_handshake(client: httpx.AsyncClient, receiver: Receiver) -> None:
    response = await subscribe(client)
    assert response.status_code == 201, response.text
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["subscriptionId"])
    assert body["@odata.etag"].startswith('W/"') and body["clientState"] == "state-1"
    assert len(receiver.handshakes) == 1
    listed = (await client.get(f"{ROOT}/subscriptions")).json()["value"]
    assert [s["subscriptionId"] for s in listed] == [body["subscriptionId"]]
    one = await client.get(f"{ROOT}/subscriptions('{body['subscriptionId']}')")
    assert one.json()["resource"] == RESOURCE


async def test_handshake_failures(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    receiver.handshake_ok = False
    response = await subscribe(client)
    assert response.status_code == 400 and "error" in response.json()
    receiver.handshake_ok = True
    bc.webhooks.settings.handshake_timeout = 0.1  # BC waits 5 s; shortened for the test
    receiver.handshake_sleep = 0.3
    assert (await subscribe(client)).status_code == 400
    assert (await client.get(f"{ROOT}/subscriptions")).json()["value"] == []
    unsupported = await subscribe(client, resource=RESOURCE.replace("customers", "salesOrderLines"))
    assert unsupported.status_code == 400


async def test_renew_and_delete(client: httpx.AsyncClient, receiver: Receiver) -> None:
    sub = (await subscribe(client)).json()
    url = f"{ROOT}/subscriptions('{sub['subscriptionId']}')"
    body = {"notificationUrl": HOOK_URL, "resource": RESOURCE, "clientState": "state-1"}
    assert (await client.patch(url, json=body)).status_code == 400  # If-Match missing
    await asyncio.sleep(0.01)
    renewed = await client.patch(url, json=body, headers={"If-Match": sub["@odata.etag"]})
    assert renewed.status_code == 200 and len(receiver.handshakes) == 2
    assert renewed.json()["expirationDateTime"] > sub["expirationDateTime"]
    assert renewed.json()["@odata.etag"] != sub["@odata.etag"]
    assert (await client.patch(url, json=body, headers={"If-Match": sub["@odata.etag"]})).status_code == 409
    receiver.handshake_ok = False
    failed = await client.patch(url, json=body, headers={"If-Match": renewed.json()["@odata.etag"]})
    assert failed.status_code == 400
    assert (await client.delete(url, headers={"If-Match": "*"})).status_code == 204
    assert (await client.get(url)).status_code == 404


async def test_notifications_batched_and_merged(client: httpx.AsyncClient, receiver: Receiver) -> None:
    sub = (await subscribe(client)).json()
    customer = await make(client, "customers", {"displayName": "Adatum"})
    url = f"{COMPANY}/customers({customer['id']})"
    for city in ("Oslo", "Rome", "Bonn"):
        await client.patch(url, json={"city": city}, headers={"If-Match": "*"})
    await receiver.wait(1)
    value = receiver.notifications[0]["value"]
    assert [n["changeType"] for n in value] == ["created", "updated"]  # three updates merged into one
    entry = value[1]
    assert entry["subscriptionId"] == sub["subscriptionId"] and entry["clientState"] == "state-1"
    assert entry["resource"] == f"{RESOURCE}({customer['id']})"  # the stored resource + "(<key>)"
    assert entry["expirationDateTime"] == sub["expirationDateTime"]
    headers = receiver.headers[0]
    assert headers["content-type"] == "application/json" and "clientrequestid" in headers
    assert "x-ms-correlation-id" in headers
    await client.delete(url, headers={"If-Match": "*"})
    await receiver.wait(2)
    assert receiver.notifications[1]["value"][0]["changeType"] == "deleted"


async def test_line_change_notifies_header(client: httpx.AsyncClient, receiver: Receiver) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum"})
    sales_order = await make(client, "salesOrders", {"customerId": customer["id"]})
    await subscribe(client, resource=RESOURCE.replace("customers", "salesOrders"))
    await client.post(f"{COMPANY}/salesOrders({sales_order['id']})/salesOrderLines",
                      json={"lineType": "Comment", "description": "hi"})
    await receiver.wait(1)
    assert receiver.notifications[0]["value"][0]["resource"].endswith(f"salesOrders({sales_order['id']})")


async def test_collection_over_threshold(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    bc.webhooks.settings.collection_threshold = 3
    await subscribe(client)
    for i in range(4):
        await make(client, "customers", {"displayName": f"C{i}"})
    await receiver.wait(1)
    (entry,) = receiver.notifications[0]["value"]
    assert entry["changeType"] == "collection"
    assert re.search(r"/customers\?\$filter=lastModifiedDateTime%20gt%20\d{4}-", entry["resource"])
    rows = (await client.get(f"{COMPANY}/customers")).json()["value"]
    for row in rows[:3]:
        await client.patch(f"{COMPANY}/customers({row['id']})", json={"city": "X"}, headers={"If-Match": "*"})
    await client.delete(f"{COMPANY}/customers({rows[3]['id']})", headers={"If-Match": "*"})
    await receiver.wait(2)
    (entry,) = receiver.notifications[1]["value"]
    assert entry["changeType"] == "collection" and entry["resource"].endswith("/customers")


async def test_retry_schedule_then_delete(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    await subscribe(client)
    receiver.statuses = [503, 429, 408, 500, 502, 503]  # six failures > 5 attempts
    await make(client, "customers", {"displayName": "Adatum"})
    await receiver.wait(6)
    await asyncio.sleep(0.05)
    attempts = [d for d in bc.webhooks.deliveries if d["kind"] == "notification"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4, 5, 6]
    assert bc.webhooks.subs == {}


async def test_retry_then_success(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    await subscribe(client)
    receiver.statuses = [503, 503]
    await make(client, "customers", {"displayName": "Adatum"})
    await receiver.wait(3)
    assert len(bc.webhooks.subs) == 1
    assert receiver.notifications[0] == receiver.notifications[2]


async def test_other_status_deletes_subscription(client: httpx.AsyncClient, receiver: Receiver,
                                                 bc: BCSandbox) -> None:
    await subscribe(client)
    receiver.statuses = [401]
    await make(client, "customers", {"displayName": "Adatum"})
    await receiver.wait(1)
    await asyncio.sleep(0.02)
    assert bc.webhooks.subs == {} and len(receiver.notifications) == 1


async def test_expiry_deletes(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    sub = (await subscribe(client)).json()
    advanced = await client.post("/_sandbox/time", json={"advance_seconds": 60})  # 3 days * 0.0001 ≈ 26 s
    assert advanced.json()["expired"] == [sub["subscriptionId"]]
    assert (await client.get(f"{ROOT}/subscriptions")).json()["value"] == []


async def test_subscription_limit(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    bc.webhooks.settings.max_subscriptions = 2
    assert (await subscribe(client)).status_code == 201
    assert (await subscribe(client)).status_code == 201
    third = await subscribe(client)
    assert third.status_code == 400


async def test_dropped_webhooks(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    await subscribe(client)
    await client.post("/_sandbox/faults", json={"drop_webhooks": True})
    await make(client, "customers", {"displayName": "Adatum"})
    await asyncio.sleep(0.2)
    assert receiver.notifications == []
    assert [d["outcome"] for d in bc.webhooks.deliveries if d["kind"] == "notification"] == ["dropped"]


async def test_supported_resources(client: httpx.AsyncClient) -> None:
    url = ROOT.replace("/api/v2.0", "/api/microsoft/runtime/beta") + f"/companies({COMPANY_ID})"
    response = await client.get(f"{url}/webhookSupportedResources")
    names: list[Any] = [r["resource"] for r in response.json()["value"]]
    assert "v2.0/customers" in names and "v2.0/salesOrderLines" not in names


async def test_posting_notifies_order_deleted_and_invoice_created(client: httpx.AsyncClient,
                                                                  receiver: Receiver) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum"})
    sales_order = await make(client, "salesOrders", {
        "customerId": customer["id"], "salesOrderLines": [{"lineType": "Account", "quantity": 1, "unitPrice": 5}]})
    await subscribe(client, resource=RESOURCE.replace("customers", "salesOrders"))
    await subscribe(client, resource=RESOURCE.replace("customers", "salesInvoices"))
    await client.post(f"{COMPANY}/salesOrders({sales_order['id']})/Microsoft.NAV.shipAndInvoice")
    await receiver.wait(1)
    changes = sorted((n["changeType"], n["resource"].split("/")[-1].split("(")[0])
                     for n in receiver.notifications[0]["value"])
    assert changes == [("created", "salesInvoices"), ("deleted", "salesOrders")]


class _Unreachable(httpx.AsyncBaseTransport):
    """Answers handshakes through the receiver; every notification finds nobody listening."""

    def __init__(self, receiver: Receiver) -> None:
        self.inner = httpx.ASGITransport(app=receiver)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if b"validationToken" not in request.url.query:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_no_answer_is_retried_then_deleted(client: httpx.AsyncClient, receiver: Receiver,
                                                 bc: BCSandbox) -> None:
    bc.webhooks.client = httpx.AsyncClient(transport=_Unreachable(receiver))
    await subscribe(client)
    await make(client, "customers", {"displayName": "Adatum"})
    async with asyncio.timeout(5):
        while bc.webhooks.subs:
            await asyncio.sleep(0.02)
    outcomes = [d["outcome"] for d in bc.webhooks.deliveries if d["kind"] == "notification"]
    assert outcomes == ["no answer"] * 6


async def test_custom_api_subscription(client: httpx.AsyncClient, receiver: Receiver) -> None:
    resource = f"/api/bcsync/integration/v1.0/companies({COMPANY_ID})/resources"
    at_v2 = await client.post(f"{ROOT}/subscriptions", json={"notificationUrl": HOOK_URL, "resource": resource})
    assert at_v2.status_code == 400  # a custom API resource is subscribed at that API's own endpoint
    response = await client.post(f"{CUSTOM_ROOT}/subscriptions", json={"notificationUrl": HOOK_URL,
                                                                      "resource": resource, "clientState": "c"})
    assert response.status_code == 201, response.text
    custom_root = COMPANY.replace("/api/v2.0/", "/api/bcsync/integration/v1.0/")
    created = await make(client, "resources", {"displayName": "Consultant"}, custom_root)
    await receiver.wait(1)
    entry = receiver.notifications[0]["value"][0]
    assert entry["resource"] == f"{resource}({created['id']})"
