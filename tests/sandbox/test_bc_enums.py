"""Enum values: API v2.0 writes XML-encoded member names ("_x0020_", "In_x0020_Review") unless the `plain`
reading is chosen; both spellings are accepted on write and in `$filter`; memory keeps the AL name."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.bc.enums import ENUMS, decode, encode
from sandbox.bc.runtime import BCSandbox
from tests.sandbox.conftest import COMPANY, ROOT, basics, make

PLAIN = pytest.mark.parametrize("bc_config", [{"enum_style": "plain"}], indirect=True)


def test_encoding_rule() -> None:
    assert encode(" ") == "_x0020_" and encode("In Review") == "In_x0020_Review"
    assert encode("Fixed Asset") == "Fixed_x0020_Asset" and encode("Non-Inventory") == "Non_x002D_Inventory"
    assert encode("Positive Adjmt.") == "Positive_x0020_Adjmt_x002E_"  # Learn "Get itemLedgerEntries"
    assert decode("In_x0020_Review") == "In Review" and decode("Ship") == "Ship"
    assert ENUMS[("salesInvoices", "status")].canonical("In_x0020_Review") == "In Review"
    assert ENUMS[("customers", "blocked")].canonical("Maybe") is None


async def _invoice_in_review(client: httpx.AsyncClient, bc: BCSandbox) -> dict[str, Any]:
    data = await basics(client)
    invoice = await make(client, "salesInvoices", {"customerId": data["customer"]["id"]})
    row = bc.store.table("salesInvoices").rows[invoice["id"]]
    bc.store.put("salesInvoices", {**row.data, "status": "In Review"}, change=None)  # BC's approval workflow
    return invoice


async def test_encoded_by_default(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum"})
    assert customer["blocked"] == "_x0020_"
    assert bc.store.table("customers").rows[customer["id"]].data["blocked"] == " "  # memory: the AL name
    url = f"{COMPANY}/customers({customer['id']})"
    assert (await client.get(url)).json()["blocked"] == "_x0020_"
    assert (await client.get(f"{COMPANY}/customers?$select=blocked")).json()["value"][0]["blocked"] == "_x0020_"
    assert (await client.get(f"/_sandbox/entities/customers/{customer['id']}")).json()["blocked"] == "_x0020_"
    batch = await client.post(f"{ROOT}/$batch", json={"requests": [{"id": "1", "method": "GET", "url": url}]})
    assert batch.json()["responses"][0]["body"]["blocked"] == "_x0020_"
    invoice = await _invoice_in_review(client, bc)
    assert (await client.get(f"{COMPANY}/salesInvoices({invoice['id']})")).json()["status"] == "In_x0020_Review"
    item = await make(client, "items", {"displayName": "Box", "type": "Non-Inventory"})
    assert item["type"] == "Non_x002D_Inventory"


async def test_both_spellings_accepted_on_write(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum", "blocked": "_x0020_"})
    url = f"{COMPANY}/customers({customer['id']})"
    patched = await client.patch(url, json={"blocked": "All"}, headers={"If-Match": "*"})
    assert patched.json()["blocked"] == "All"
    back = await client.patch(url, json={"blocked": " "}, headers={"If-Match": "*"})
    assert back.status_code == 200 and back.json()["blocked"] == "_x0020_"
    wrong = await client.post(f"{COMPANY}/customers", json={"blocked": "Maybe"})
    assert wrong.status_code == 400 and "Microsoft.NAV.customerBlocked" in wrong.json()["error"]["message"]
    order = await make(client, "salesOrders", {"customerId": customer["id"], "salesOrderLines": [
        {"lineType": "Fixed_x0020_Asset", "description": "Forklift"}, {"lineType": "Fixed Asset"}]})
    lines = (await client.get(f"{COMPANY}/salesOrders({order['id']})/salesOrderLines")).json()["value"]
    assert [line["lineType"] for line in lines] == ["Fixed_x0020_Asset", "Fixed_x0020_Asset"]
    assert {r.data["lineType"] for r in bc.store.table("salesOrderLines").rows.values()} == {"Fixed Asset"}


async def test_both_spellings_in_filters(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    await make(client, "customers", {"displayName": "Open"})
    await make(client, "customers", {"displayName": "Stopped", "blocked": "All"})

    async def names(flt: str) -> list[str]:
        response = await client.get(f"{COMPANY}/customers", params={"$filter": flt})
        assert response.status_code == 200, response.text
        return [c["displayName"] for c in response.json()["value"]]

    assert await names("blocked eq ' '") == await names("blocked eq '_x0020_'") == ["Open"]
    assert await names("blocked ne '_x0020_'") == ["Stopped"]
    assert (await client.get(f"{COMPANY}/customers", params={"$filter": "blocked eq 'Maybe'"})).status_code == 400
    listed = await client.get("/_sandbox/entities/customers", params={"filter": "blocked eq '_x0020_'"})
    assert listed.json()["count"] == 1
    invoice = await _invoice_in_review(client, bc)
    for literal in ("In Review", "In_x0020_Review"):
        found = await client.get(f"{COMPANY}/salesInvoices", params={"$filter": f"status eq '{literal}'"})
        assert [i["id"] for i in found.json()["value"]] == [invoice["id"]]


@PLAIN
async def test_plain_reading(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum", "blocked": "_x0020_"})
    assert customer["blocked"] == " "
    assert (await client.get(f"/_sandbox/entities/customers/{customer['id']}")).json()["blocked"] == " "
    found = await client.get(f"{COMPANY}/customers", params={"$filter": "blocked eq '_x0020_'"})
    assert [c["id"] for c in found.json()["value"]] == [customer["id"]]
    invoice = await _invoice_in_review(client, bc)
    assert (await client.get(f"{COMPANY}/salesInvoices({invoice['id']})")).json()["status"] == "In Review"
    order = await make(client, "salesOrders", {"customerId": customer["id"],
                                               "salesOrderLines": [{"lineType": "Fixed_x0020_Asset"}]})
    lines = (await client.get(f"{COMPANY}/salesOrders({order['id']})/salesOrderLines")).json()["value"]
    assert lines[0]["lineType"] == "Fixed Asset"


async def test_document_logic_keeps_working_encoded(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    draft = await make(client, "salesInvoices", {
        "customerId": data["customer"]["id"], "salesInvoiceLines": [{"itemId": data["item"]["id"], "quantity": 1}]})
    assert draft["status"] == "Draft"
    assert (await client.post(f"{COMPANY}/salesInvoices({draft['id']})/Microsoft.NAV.post")).status_code == 204
    posted = (await client.get(f"{COMPANY}/salesInvoices({draft['id']})")).json()
    assert posted["status"] == "Open"
    paid = await client.post(f"/_sandbox/salesInvoices/{draft['id']}/pay", json={})
    assert paid.json()["status"] == "Paid"
