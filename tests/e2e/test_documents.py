"""Issue 5, end to end over the real api and worker: a Sales order submitted → the BC order; BC ships →
Fulfilled; BC posts → the Sales invoice, the order Invoiced; payments → Paid/Partial, Paid/Complete.
Everything travels as webhooks (Dataverse steps, BC subscriptions); nothing is triggered by hand."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.stack import Stack, StackFactory

pytestmark = pytest.mark.e2e

Json = dict[str, Any]
TIMEOUT = 45.0
ALEX = "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"
DEFAULT_UNIT_ID = "4f3e2d1c-0b9a-4f8e-9d7c-6b5a4f3e2d1c"


async def first(stack: Stack, rows: Any, what: str) -> Json:
    async def found() -> Json | None:
        result = await rows()
        return result[0] if result else None

    return await stack.wait_until(found, timeout=TIMEOUT, interval=0.2, message=what)


async def state_of(stack: Stack, entity_set: str, row_id: str, expected: tuple[int, int], what: str) -> Json:
    async def reached() -> Json | None:
        row = await stack.dv.get(entity_set, row_id)
        return row if (row["statecode"], row["statuscode"]) == expected else None

    return await stack.wait_until(reached, timeout=TIMEOUT, interval=0.2, message=what)


async def test_order_to_cash_over_webhooks(make_stack: StackFactory) -> None:
    stack = await make_stack()
    await stack.register_webhooks()
    await stack.bc.create("unitsOfMeasure", {"code": "PCS", "displayName": "Piece"})
    items = [await stack.bc.create("items", {"displayName": n, "unitPrice": p, "baseUnitOfMeasureCode": "PCS"})
             for n, p in (("Bike helmet", 49.5), ("Bike lock", 20.0))]
    products = [await first(stack, lambda i=item: stack.dv.query("products", f"productnumber eq '{i['number']}'"),
                            f"product {item['number']}") for item in items]
    account = await stack.dv.create("accounts", {"name": "Fabrikam Cycles", "customertypecode": 3})
    order = await stack.dv.create("salesorders", {"name": "PO-E2E-1",
                                                  "customerid_account@odata.bind": f"/accounts({account})"})
    for number, (product, quantity, price) in enumerate(((products[0], 2, 49.5), (products[1], 3, 20.0)), 1):
        await stack.dv.create("salesorderdetails", {
            "salesorderid@odata.bind": f"/salesorders({order})", "lineitemnumber": number, "quantity": quantity,
            "productid@odata.bind": f"/products({product['productid']})", "priceperunit": price,
            "uomid@odata.bind": f"/uoms({DEFAULT_UNIT_ID})"})
    await stack.dv.create("salesorderdetails", {"salesorderid@odata.bind": f"/salesorders({order})",
                                                "lineitemnumber": 3, "isproductoverridden": True,
                                                "productdescription": "Gift wrapping", "quantity": 1})
    await stack.dv.submit_order(order)

    bc_order = await first(stack, lambda: stack.bc.query("salesOrders", "externalDocumentNumber eq 'PO-E2E-1'"),
                           "BC order created")
    lines = sorted(await stack.bc.query("salesOrderLines", f"documentId eq {bc_order['id']}"),
                   key=lambda r: r["sequence"])
    assert [(r["lineType"], r["quantity"]) for r in lines] == [("Item", 2), ("Item", 3), ("Comment", 0)]
    customer = await stack.bc.get("customers", bc_order["customerId"])
    assert customer["displayName"] == "Fabrikam Cycles"
    person = (await stack.bc.query("salespeoplePurchasers", "email eq 'alex.seller@contoso.example'"))[0]
    assert bc_order["salesperson"] == person["code"]

    await stack.bc.ship(bc_order["id"])
    await state_of(stack, "salesorders", order, (3, 100001), "Sales order Fulfilled")

    await stack.bc.post_order(bc_order["id"])
    [posted] = await stack.bc.query("salesInvoices", f"orderId eq {bc_order['id']}")
    invoice = await first(stack, lambda: stack.dv.query("invoices", f"invoicenumber eq '{posted['number']}'"),
                          "Sales invoice created")
    invoice = await state_of(stack, "invoices", invoice["invoiceid"], (0, 4), "invoice Billed")
    assert invoice["totalamount"] == posted["totalAmountIncludingTax"] == 159.0
    assert invoice["_salesorderid_value"] == order and invoice["_customerid_value"] == account
    assert invoice["_ownerid_value"] == ALEX
    assert len(await stack.dv.query("invoicedetails", f"_invoiceid_value eq {invoice['invoiceid']}")) == 3
    await state_of(stack, "salesorders", order, (4, 100003), "Sales order Invoiced")

    await stack.bc.pay(posted["id"], 100)
    await state_of(stack, "invoices", invoice["invoiceid"], (2, 100002), "invoice Paid/Partial")
    await stack.bc.pay(posted["id"])
    await state_of(stack, "invoices", invoice["invoiceid"], (2, 100001), "invoice Paid/Complete")
    assert len(await stack.bc.query("salesOrders", "externalDocumentNumber eq 'PO-E2E-1'")) == 0  # posted
    assert len(await stack.dv.query("invoices", f"invoicenumber eq '{posted['number']}'")) == 1
