"""The demo's document flow: Alex's Sales order reaches Business Central, BC posts it, the invoice comes back.

SALESORDER-ORDER creates the BC order when the Sales order is Submitted; POSTEDSALESINV-INV brings the posted
invoice to Sales and marks the originating order Invoiced (statecode 4, statuscode 100003). The people act
through the sandboxes' control endpoints, as in story.py; bcsync does the rest over webhooks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from service.demo.story import People

ORDER_NAME = "PO-FAB-1001"
QUANTITY = 4
WRITE_IN = "Gift wrapping"
TIMEOUT = 45.0
INVOICED = (4, 100003)
INVOICE_STATES: dict[tuple[Any, Any], str] = {
    (0, 4): "Billed", (2, 100002): "Paid/Partial", (2, 100001): "Paid/Complete"}


class StepRunner(Protocol):
    def __call__(self, title: str, act: Callable[[], Awaitable[None]], check: Callable[[], Awaitable[Any]],
                 describe: Callable[[Any], str], within: float = ...) -> Awaitable[Any]: ...


async def document_flow(people: People, step: StepRunner, account_id: str, product: dict[str, Any] | None) -> None:
    """Three steps: the submitted order in BC with its lines; posted, the invoice in Sales; the order Invoiced."""
    order: dict[str, Any] = {}
    posted: dict[str, Any] = {}
    item_number = str((product or {}).get("productnumber") or "")

    async def submit_order() -> None:
        if not account_id or not product:
            raise LookupError("the account or the product of the earlier steps is missing in Sales")
        order.update(await people.dv_create("salesorders", {
            "name": ORDER_NAME, "customerid_account@odata.bind": f"/accounts({account_id})"}))
        lines: list[dict[str, Any]] = [
            {"lineitemnumber": 1, "productid@odata.bind": f"/products({product['productid']})",
             "quantity": QUANTITY, "priceperunit": product.get("price"),
             **({"uomid@odata.bind": f"/uoms({product['_defaultuomid_value']})"}
                if product.get("_defaultuomid_value") else {})},
            {"lineitemnumber": 2, "isproductoverridden": True, "productdescription": WRITE_IN, "quantity": 1}]
        for line in lines:
            await people.dv_create("salesorderdetails", {
                "salesorderid@odata.bind": f"/salesorders({order['salesorderid']})", **line})
        await people.dv_submit_order(order["salesorderid"])

    async def order_in_bc() -> Any:
        found = await people.bc_find("salesOrders", f"externalDocumentNumber eq '{ORDER_NAME}'")
        if not found:
            return None
        lines = sorted(await people.bc_find("salesOrderLines", f"documentId eq {found[0]['id']}"),
                       key=lambda r: r.get("sequence", 0))
        kinds = [(r.get("lineType"), r.get("lineObjectNumber") or r.get("description"), r.get("quantity"))
                 for r in lines]
        if kinds != [("Item", item_number, QUANTITY), ("Comment", WRITE_IN, 0)]:
            return None
        return {**found[0], "lines": lines}

    def order_described(o: dict[str, Any]) -> str:
        item = o["lines"][0]
        return (f"order {o['number']} in BC for customer {o.get('customerNumber')}, 2 lines: {item['quantity']:g} "
                f"{item.get('unitOfMeasureCode') or ''} of {item_number} at {item.get('unitPrice')}, "
                f"comment '{WRITE_IN}'")

    bc_order = await step(f"Alex submits the Sales order {ORDER_NAME}: {QUANTITY} crates of 'Bike helmet', "
                          "gift wrapping", submit_order, order_in_bc, order_described, TIMEOUT)

    async def post() -> None:
        if not bc_order:
            raise LookupError(f"there is no BC order for {ORDER_NAME} to post")
        posted.update(await people.bc_post_order(bc_order["id"]))

    async def invoice_in_sales() -> Any:
        found = await people.dv_find("invoices", f"invoicenumber eq '{posted.get('number')}'")
        if not found:
            return None
        lines = await people.dv_find("invoicedetails", f"_invoiceid_value eq {found[0]['invoiceid']}")
        # The rule writes the header, then the lines, then the state (Billed): wait for the whole of it, or a
        # quick look can catch the invoice between its lines and its state.
        settled = (found[0].get("statecode"), found[0].get("statuscode")) in INVOICE_STATES
        return {**found[0], "lines": lines} if len(lines) == 2 and settled else None

    def invoice_described(i: dict[str, Any]) -> str:
        state = INVOICE_STATES.get((i.get("statecode"), i.get("statuscode")), f"state {i.get('statecode')}")
        return (f"invoice {i['invoicenumber']} is in Sales with its 2 lines, total {i.get('totalamount')}, "
                f"{state}, for the order {ORDER_NAME}")

    await step("The accountant posts the order in BC (ship and invoice)", post, invoice_in_sales,
               invoice_described, TIMEOUT)

    async def nothing() -> None:
        if not posted:
            raise LookupError("the order was not posted")

    async def order_invoiced() -> Any:
        found = await people.dv_find("salesorders", f"salesorderid eq {order.get('salesorderid')}")
        return found[0] if found and (found[0].get("statecode"), found[0].get("statuscode")) == INVOICED else None

    await step(f"Alex opens the order {ORDER_NAME} in Sales again", nothing, order_invoiced,
               lambda o: "its status is Invoiced (statecode 4, statuscode 100003)", TIMEOUT)
