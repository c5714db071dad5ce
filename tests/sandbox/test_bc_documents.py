"""Sales orders and invoices: deep insert, lines, totals, posting, shipping, payment, $batch."""

from __future__ import annotations

from typing import Any

import httpx

from tests.sandbox.conftest import COMPANY, ROOT, basics, make


async def order(client: httpx.AsyncClient, data: dict[str, Any]) -> dict[str, Any]:
    return await make(client, "salesOrders", {
        "customerNumber": data["customer"]["number"], "externalDocumentNumber": "CRM-1",
        "salesOrderLines": [
            {"lineType": "Item", "itemId": data["item"]["id"], "quantity": 2},
            {"lineType": "Item", "lineObjectNumber": data["item"]["number"], "quantity": 1, "unitPrice": 50,
             "discountAmount": 10, "taxPercent": 10},
            {"lineType": "Comment", "description": "Deliver to back door"},
        ],
    })


async def test_deep_insert_and_totals(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    created = await order(client, data)
    assert created["customerId"] == data["customer"]["id"] and created["customerName"] == "Adatum"
    assert created["salesperson"] == "JR" and created["currencyCode"] == "EUR"
    assert created["totalAmountExcludingTax"] == 240.0  # 2*100 + (50-10)
    assert created["totalTaxAmount"] == 4.0 and created["totalAmountIncludingTax"] == 244.0
    lines = (await client.get(f"{COMPANY}/salesOrders({created['id']})/salesOrderLines")).json()["value"]
    assert [line["sequence"] for line in lines] == [10000, 20000, 30000]
    assert lines[0]["description"] == "Desk" and lines[0]["unitOfMeasureCode"] == "PCS"
    expanded = (await client.get(f"{COMPANY}/salesOrders({created['id']})?$expand=salesOrderLines")).json()
    assert len(expanded["salesOrderLines"]) == 3


async def test_line_change_changes_header(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    created = await order(client, data)
    lines_url = f"{COMPANY}/salesOrders({created['id']})/salesOrderLines"
    line = (await client.get(lines_url)).json()["value"][0]
    patched = await client.patch(f"{lines_url}({line['id']})", json={"quantity": 3},
                                 headers={"If-Match": line["@odata.etag"]})
    assert patched.status_code == 200 and patched.json()["amountExcludingTax"] == 300.0
    header = (await client.get(f"{COMPANY}/salesOrders({created['id']})")).json()
    assert header["totalAmountExcludingTax"] == 340.0 and header["@odata.etag"] != created["@odata.etag"]
    added = await client.post(lines_url, json={"itemId": data["item"]["id"], "quantity": 1})
    assert added.status_code == 201 and added.json()["sequence"] == 40000
    assert (await client.delete(f"{lines_url}({added.json()['id']})", headers={"If-Match": "*"})).status_code == 204
    assert (await client.get(f"{COMPANY}/salesOrders({created['id']})")).json()["totalAmountExcludingTax"] == 340.0


async def test_order_needs_a_known_customer(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{COMPANY}/salesOrders", json={})).status_code == 400
    assert (await client.post(f"{COMPANY}/salesOrders", json={"customerNumber": "NOPE"})).status_code == 400


async def test_ship_and_invoice_posts_the_order(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    created = await order(client, data)
    posted = await client.post(f"{COMPANY}/salesOrders({created['id']})/Microsoft.NAV.shipAndInvoice")
    assert posted.status_code == 204
    assert (await client.get(f"{COMPANY}/salesOrders({created['id']})")).status_code == 404
    invoices = (await client.get(f"{COMPANY}/salesInvoices?$filter=orderId eq {created['id']}")).json()["value"]
    assert len(invoices) == 1
    invoice = invoices[0]
    assert invoice["orderNumber"] == created["number"] and invoice["status"] == "Open"
    assert invoice["remainingAmount"] == invoice["totalAmountIncludingTax"] == 244.0
    assert invoice["number"].startswith("PSI")
    lines = (await client.get(f"{COMPANY}/salesInvoices({invoice['id']})/salesInvoiceLines")).json()["value"]
    assert len(lines) == 3
    customer = (await client.get(f"{COMPANY}/customers({data['customer']['id']})")).json()
    assert customer["balanceDue"] == 244.0
    # posted invoices are read-only
    denied = await client.patch(f"{COMPANY}/salesInvoices({invoice['id']})", json={"externalDocumentNumber": "x"},
                                headers={"If-Match": "*"})
    assert denied.status_code == 400
    # partial then full payment (as a human user: BC's API has no payment action on invoices)
    paid = await client.post(f"/_sandbox/salesInvoices/{invoice['id']}/pay", json={"amount": 44})
    assert paid.json()["remainingAmount"] == 200.0 and paid.json()["status"] == "Open"
    paid = await client.post(f"/_sandbox/salesInvoices/{invoice['id']}/pay", json={})
    assert paid.json()["remainingAmount"] == 0.0 and paid.json()["status"] == "Paid"


async def test_post_draft_invoice_keeps_id_new_number(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    draft = await make(client, "salesInvoices", {
        "customerId": data["customer"]["id"],
        "salesInvoiceLines": [{"itemId": data["item"]["id"], "quantity": 1}],
    })
    assert draft["status"] == "Draft" and draft["number"].startswith("SI")
    posted = await client.post(f"{COMPANY}/salesInvoices({draft['id']})/Microsoft.NAV.post")
    assert posted.status_code == 204
    invoice = (await client.get(f"{COMPANY}/salesInvoices({draft['id']})")).json()
    assert invoice["number"] != draft["number"] and invoice["status"] == "Open"
    assert invoice["remainingAmount"] == 100.0
    again = await client.post(f"{COMPANY}/salesInvoices({draft['id']})/Microsoft.NAV.post")
    assert again.status_code == 400


async def test_ship_from_control(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    created = await order(client, data)
    shipped = await client.post(f"/_sandbox/salesOrders/{created['id']}/ship")
    assert shipped.status_code == 200 and shipped.json()["fullyShipped"] is True


async def test_batch(client: httpx.AsyncClient) -> None:
    requests = [
        {"id": "1", "method": "POST", "url": f"companies({COMPANY.split('(')[1].rstrip(')')})/customers",
         "headers": {"Content-Type": "application/json"}, "body": {"displayName": "One"}},
        {"id": "2", "method": "GET", "url": f"{ROOT}/companies"},
        {"id": "3", "method": "PATCH", "url": f"{COMPANY}/customers(11111111-1111-1111-1111-111111111111)",
         "headers": {"If-Match": "*"}, "body": {"city": "x"}},
    ]
    response = await client.post(f"{ROOT}/$batch", json={"requests": requests})
    assert response.status_code == 200
    statuses = {r["id"]: r["status"] for r in response.json()["responses"]}
    assert statuses == {"1": 201, "2": 200, "3": 404}
    assert len((await client.get(f"{COMPANY}/customers")).json()["value"]) == 1
    # all-or-nothing
    atomic = await client.post(f"{ROOT}/$batch", json={"requests": [
        {"id": "a", "method": "POST", "url": f"{COMPANY}/customers", "body": {"displayName": "Two"}},
        {"id": "b", "method": "POST", "url": f"{COMPANY}/customers", "body": {"bogus": 1}},
    ]}, headers={"Isolation": "snapshot"})
    statuses = {r["id"]: r["status"] for r in atomic.json()["responses"]}
    assert statuses == {"a": 424, "b": 400}
    assert len((await client.get(f"{COMPANY}/customers")).json()["value"]) == 1
    assert len((await client.get(f"{COMPANY}/contacts")).json()["value"]) == 1  # "Two"'s contact undone too
    too_many = [{"id": str(i), "method": "GET", "url": f"{ROOT}/companies"} for i in range(101)]
    assert (await client.post(f"{ROOT}/$batch", json={"requests": too_many})).status_code == 400


async def test_cannot_delete_customer_or_item_in_use(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    created = await order(client, data)
    customer = await client.delete(f"{COMPANY}/customers({data['customer']['id']})", headers={"If-Match": "*"})
    assert customer.status_code == 400 and customer.json()["error"]["code"] == "Internal_ErrorOnDelete"
    item = await client.delete(f"{COMPANY}/items({data['item']['id']})", headers={"If-Match": "*"})
    assert item.status_code == 400
    await client.delete(f"{COMPANY}/salesOrders({created['id']})", headers={"If-Match": "*"})
    assert (await client.delete(f"{COMPANY}/items({data['item']['id']})", headers={"If-Match": "*"})).status_code == 204
