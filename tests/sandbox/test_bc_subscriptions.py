"""Subscription `resource` forms, the notification `resource` readings and webhookSupportedResources."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx
import pytest

from sandbox.bc.clock import iso, parse_iso
from sandbox.bc.runtime import BCSandbox
from sandbox.config import DEMO_TENANT_ID
from tests.sandbox.conftest import COMPANY, HOOK_URL, ROOT, Receiver, make

COMPANY_ID = COMPANY.split("(")[1].rstrip(")")
CUSTOM_ROOT = ROOT.replace("/api/v2.0", "/api/bcsync/integration/v1.0")
ABSOLUTE = f"http://bc.test{ROOT}/companies({COMPANY_ID})/customers"  # the test client's host
SUPPORTED = ROOT.replace("/api/v2.0", "/api/microsoft/runtime/beta") + f"/companies({COMPANY_ID})/webhookSupportedResources"


async def subscribe(client: httpx.AsyncClient, resource: str, root: str = ROOT) -> httpx.Response:
    return await client.post(f"{root}/subscriptions", json={"notificationUrl": HOOK_URL, "resource": resource,
                                                            "clientState": "cs"})


@pytest.mark.parametrize("resource", [
    f"/api/v2.0/companies({COMPANY_ID})/customers",  # as the docs post it
    f"api/v2.0/companies({COMPANY_ID})/customers",
    ABSOLUTE,
    f"http://127.0.0.1:8081{ROOT}/companies({COMPANY_ID})/customers",  # the environment's own address
])
async def test_resource_forms_accepted_and_kept_verbatim(client: httpx.AsyncClient, resource: str) -> None:
    response = await subscribe(client, resource)
    assert response.status_code == 201, response.text
    assert response.json()["resource"] == resource
    listed = (await client.get(f"{ROOT}/subscriptions")).json()["value"]
    assert [s["resource"] for s in listed] == [resource]


@pytest.mark.parametrize("resource", [
    f"companies({COMPANY_ID})/customers",  # no api/<version>/
    f"/api/v1.0/companies({COMPANY_ID})/customers",  # another API than the endpoint's
    f"/api/bcsync/integration/v1.0/companies({COMPANY_ID})/resources",  # custom API at the v2.0 endpoint
    f"/api/v2.0/companies({COMPANY_ID})/nothings",
    f"/api/v2.0/companies({COMPANY_ID})/salesOrderLines",  # lines notify their header
    f"/api/v2.0/companies({COMPANY_ID})/contactsInformation",  # temporary table
    f"/api/v2.0/companies({COMPANY_ID})/contacts",  # not listed unless webhook_contacts
    f"/api/v2.0/companies({COMPANY_ID})/customers?$filter=city eq 'Oslo'",
    f"http://elsewhere.test{ROOT}/companies({COMPANY_ID})/customers",  # another host
    f"http://bc.test/v2.0/{DEMO_TENANT_ID}/sandbox/api/v2.0/companies({COMPANY_ID})/customers",  # another env
])
async def test_resource_refused(client: httpx.AsyncClient, receiver: Receiver, resource: str) -> None:
    response = await subscribe(client, resource)
    assert response.status_code == 400, response.text
    assert receiver.handshakes == []  # refused before the handshake


async def test_custom_endpoint_takes_only_its_own_resources(client: httpx.AsyncClient) -> None:
    v2 = await subscribe(client, f"/api/v2.0/companies({COMPANY_ID})/customers", CUSTOM_ROOT)
    assert v2.status_code == 400
    for entity in ("resources", "customerPriceGroups", "salesPrices"):
        response = await subscribe(client, f"/api/bcsync/integration/v1.0/companies({COMPANY_ID})/{entity}",
                                   CUSTOM_ROOT)
        assert response.status_code == 201, response.text


async def _first_notification(client: httpx.AsyncClient, receiver: Receiver, resource: str) -> tuple[str, str]:
    assert (await subscribe(client, resource)).status_code == 201
    customer = await make(client, "customers", {"displayName": "Adatum"})
    await receiver.wait(1)
    return receiver.notifications[0]["value"][0]["resource"], customer["id"]


@pytest.mark.parametrize("resource", [f"/api/v2.0/companies({COMPANY_ID})/customers", ABSOLUTE])
async def test_as_subscribed_notification_resource(client: httpx.AsyncClient, receiver: Receiver,
                                                   resource: str) -> None:
    sent, customer_id = await _first_notification(client, receiver, resource)
    assert sent == f"{resource}({customer_id})"


@pytest.mark.parametrize("bc_config", [{"notification_resource": "relative"}], indirect=True)
async def test_relative_notification_resource(client: httpx.AsyncClient, receiver: Receiver) -> None:
    sent, customer_id = await _first_notification(client, receiver, ABSOLUTE)
    assert sent == f"api/v2.0/companies({COMPANY_ID})/customers({customer_id})"


@pytest.mark.parametrize("bc_config", [{"notification_resource": "absolute"}], indirect=True)
async def test_absolute_notification_resource(client: httpx.AsyncClient, receiver: Receiver) -> None:
    sent, customer_id = await _first_notification(client, receiver, f"api/v2.0/companies({COMPANY_ID})/customers")
    assert sent == f"{ABSOLUTE}({customer_id})"


async def _collection(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox,
                      resource: str) -> tuple[str, str, datetime]:
    bc.webhooks.settings.collection_threshold = 2
    assert (await subscribe(client, resource)).status_code == 201
    first = await make(client, "customers", {"displayName": "C0"})
    for i in range(1, 3):
        await make(client, "customers", {"displayName": f"C{i}"})
    await receiver.wait(1)
    (entry,) = receiver.notifications[0]["value"]
    assert entry["changeType"] == "collection"
    # codeunit "API Webhook Notification Send": the first change's notification time minus 50 ms. That time is
    # taken in the trigger (codeunit 6153), before the record's SystemModifiedAt: at most the record's time.
    resource, _, since = entry["resource"].partition("?$filter=lastModifiedDateTime%20gt%20")
    latest = parse_iso(first["lastModifiedDateTime"]) - timedelta(milliseconds=50)
    assert latest - timedelta(seconds=1) < parse_iso(since) <= latest, (since, iso(latest))
    return resource, since, latest


async def test_collection_as_subscribed(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    sent, since, _ = await _collection(client, receiver, bc, ABSOLUTE)
    assert sent == ABSOLUTE and since.endswith("Z")


@pytest.mark.parametrize("bc_config", [{"notification_resource": "relative"}], indirect=True)
async def test_collection_relative(client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    sent, _, _ = await _collection(client, receiver, bc, ABSOLUTE)
    # the doc sample writes its collection example with a leading slash
    assert sent == f"/api/v2.0/companies({COMPANY_ID})/customers"


@pytest.mark.parametrize("bc_config", [{"notification_time": "modified"}], indirect=True)
async def test_collection_since_when_notifications_carry_the_modified_time(
        client: httpx.AsyncClient, receiver: Receiver, bc: BCSandbox) -> None:
    sent, since, latest = await _collection(client, receiver, bc, ABSOLUTE)
    assert sent == ABSOLUTE and since == iso(latest)  # the record's own time, minus 50 ms


async def test_supported_resources(client: httpx.AsyncClient) -> None:
    response = await client.get(SUPPORTED)
    assert response.status_code == 200
    names = [r["resource"] for r in response.json()["value"]]
    assert {"v2.0/customers", "v2.0/items", "v2.0/salesOrders", "v2.0/salesInvoices", "v2.0/unitsOfMeasure",
            "v2.0/currencies", "bcsync/integration/v1.0/resources", "bcsync/integration/v1.0/customerPriceGroups",
            "bcsync/integration/v1.0/salesPrices"} == set(names)
    only_v2 = await client.get(SUPPORTED, params={"$filter": "resource eq 'v2.0*'"})  # the docs' filter
    assert {r["resource"] for r in only_v2.json()["value"]} == {n for n in names if n.startswith("v2.0/")}
    exact = await client.get(SUPPORTED, params={"$filter": "resource eq 'v2.0/items'"})
    assert exact.json()["value"] == [{"resource": "v2.0/items"}]
    assert (await client.get(SUPPORTED, headers={"Authorization": ""})).status_code == 401


@pytest.mark.parametrize("bc_config", [{"webhook_contacts": True}], indirect=True)
async def test_contacts_take_webhooks_in_that_reading(client: httpx.AsyncClient, receiver: Receiver) -> None:
    names = [r["resource"] for r in (await client.get(SUPPORTED)).json()["value"]]
    assert "v2.0/contacts" in names and "v2.0/salespeoplePurchasers" in names
    assert "v2.0/contactsInformation" not in names and "v2.0/salesOrderLines" not in names
    contacts = f"/api/v2.0/companies({COMPANY_ID})/contacts"
    assert (await subscribe(client, contacts)).status_code == 201
    assert (await subscribe(client, contacts.replace("contacts", "salespeoplePurchasers"))).status_code == 201
    person = await make(client, "contacts", {"displayName": "Ann"})
    await receiver.wait(1)
    assert receiver.notifications[0]["value"][0]["resource"] == f"{contacts}({person['id']})"
    assert re.fullmatch(r"[0-9a-f-]{36}", person["id"])
