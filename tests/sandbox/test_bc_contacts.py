"""contacts without jobTitle (page 30071 as this project reads it) and contactsInformation (page 30072)."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.bc.runtime import BCSandbox
from tests.sandbox.conftest import COMPANY, make


async def test_contacts_have_no_job_title(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/seed", json={"customers": 2, "contactsPerCustomer": 2})
    contacts = (await client.get(f"{COMPANY}/contacts")).json()["value"]
    assert len(contacts) == 6 and all("jobTitle" not in c for c in contacts)
    refused = await client.post(f"{COMPANY}/contacts", json={"displayName": "Ann", "jobTitle": "Buyer"})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith(
        "The property 'jobTitle' does not exist on type 'Microsoft.NAV.contact'.")
    assert (await client.get(f"{COMPANY}/contacts?$select=jobTitle")).status_code == 400
    salespeople = (await client.get(f"{COMPANY}/salespeoplePurchasers")).json()["value"]
    assert all("jobTitle" in s for s in salespeople)  # page 30075 has it


async def _company_with_persons(client: httpx.AsyncClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    customer = await make(client, "customers", {"displayName": "Adatum"})
    company = (await client.get(f"/_sandbox/customers/{customer['id']}/contacts")).json()["company"]
    persons = [await make(client, "contacts", {"type": "Person", "displayName": name,
                                               "companyNumber": company["number"]}) for name in ("Ann", "Bo")]
    other = await make(client, "customers", {"displayName": "Trey"})
    other_company = (await client.get(f"/_sandbox/customers/{other['id']}/contacts")).json()["company"]
    await make(client, "contacts", {"type": "Person", "displayName": "Cy", "companyNumber": other_company["number"]})
    await make(client, "contacts", {"type": "Person", "displayName": "Loner"})
    return customer, [company, *persons]


async def test_customer_contacts_information_lists_company_and_persons(client: httpx.AsyncClient) -> None:
    customer, contacts = await _company_with_persons(client)
    response = await client.get(f"{COMPANY}/customers({customer['id']})/contactsInformation")
    assert response.status_code == 200
    rows = response.json()["value"]
    assert rows == [{"contactId": c["id"], "contactNumber": c["number"], "contactName": c["displayName"],
                     "contactType": c["type"], "relatedId": customer["id"], "relatedType": "Customer"}
                    for c in contacts]
    assert [r["contactType"] for r in rows] == ["Company", "Person", "Person"]
    persons = await client.get(f"{COMPANY}/customers({customer['id']})/contactsInformation",
                               params={"$filter": "contactType eq 'Person'", "$select": "contactName"})
    assert persons.json()["value"] == [{"contactName": "Ann"}, {"contactName": "Bo"}]
    missing = await client.get(f"{COMPANY}/customers(11111111-1111-1111-1111-111111111111)/contactsInformation")
    assert missing.status_code == 404


async def test_top_level_contacts_information_needs_related_id_and_type(client: httpx.AsyncClient) -> None:
    customer, contacts = await _company_with_persons(client)
    url = f"{COMPANY}/contactsInformation"
    for params in ({}, {"$filter": f"relatedId eq {customer['id']}"}, {"$filter": "relatedType eq 'Customer'"},
                   {"$filter": f"relatedId eq {customer['id']} or relatedType eq 'Customer'"}):
        refused = await client.get(url, params=params)
        assert refused.status_code == 400, params
        error = refused.json()["error"]
        assert error["code"] == "Application_DialogException"
        assert error["message"].startswith("id type not specified.  CorrelationId:  ")
    both = await client.get(url, params={"$filter": f"relatedId eq {customer['id']} and relatedType eq 'Customer'"})
    assert both.status_code == 200
    assert [r["contactId"] for r in both.json()["value"]] == [c["id"] for c in contacts]
    persons = await client.get(url, params={
        "$filter": f"relatedType eq 'Customer' and relatedId eq {customer['id']} and contactType eq 'Person'"})
    assert len(persons.json()["value"]) == 2
    unknown = await client.get(url, params={
        "$filter": "relatedId eq 11111111-1111-1111-1111-111111111111 and relatedType eq 'Customer'"})
    assert unknown.status_code == 404


async def test_contacts_information_follows_changes(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    customer, contacts = await _company_with_persons(client)
    await client.delete(f"{COMPANY}/contacts({contacts[2]['id']})", headers={"If-Match": "*"})
    await client.patch(f"{COMPANY}/customers({customer['id']})", json={"displayName": "Adatum Corp"},
                       headers={"If-Match": "*"})
    rows = (await client.get(f"{COMPANY}/customers({customer['id']})/contactsInformation")).json()["value"]
    assert [(r["contactName"], r["contactType"]) for r in rows] == [("Adatum Corp", "Company"), ("Ann", "Person")]


async def test_seeded_customers_have_contacts_information(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/seed", json={"customers": 3, "contactsPerCustomer": 2})
    customer = (await client.get(f"{COMPANY}/customers?$top=1")).json()["value"][0]
    rows = (await client.get(f"{COMPANY}/customers({customer['id']})/contactsInformation")).json()["value"]
    assert [r["contactType"] for r in rows] == ["Company", "Person", "Person"]
    company = (await client.get(f"{COMPANY}/contacts({rows[0]['contactId']})")).json()
    assert company["companyNumber"] == company["number"] and company["displayName"] == customer["displayName"]
