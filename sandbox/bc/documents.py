"""Sales orders and invoices: header defaults from the customer, lines, totals, posting, payment.

Tax: each line's `taxPercent` (default 0) applies to its amount after line discount; the header's
`discountAmount` is an invoice discount taken off `totalAmountExcludingTax` (not allocated to tax).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sandbox.bc.entities import EMPTY_GUID, ENTITIES, LINES_OF, POSTED_INVOICE_PREFIX, EntityDef
from sandbox.bc.enums import LINE_TYPE
from sandbox.bc.errors import bad_request, not_found
from sandbox.bc.store import Row

if TYPE_CHECKING:
    from sandbox.bc.records import Records

LINES_OF_HEADER = {lines: header for header, lines in LINES_OF.items()}
_ADDRESS = ("AddressLine1", "AddressLine2", "City", "State", "Country")


def _round(value: float) -> float:
    return round(value + 0.0, 2)


def lines_of(records: Records, header_name: str, header_id: str) -> list[Row]:
    table = records.store.table(LINES_OF[header_name])
    return sorted((r for r in table.rows.values() if r.data["documentId"] == header_id),
                  key=lambda r: r.data["sequence"])


def check_editable(entity: EntityDef, row: Row) -> None:
    header = entity.parent or entity.name
    if header != "salesInvoices":
        return
    status = row.data.get("status")
    if entity.parent:  # a line: look at its invoice
        return
    if status != "Draft":
        raise bad_request(f"You cannot modify a posted sales invoice (status {status}).",
                          "Internal_DocumentPosted")


def check_deletable(records: Records, entity: EntityDef, row: Row) -> None:
    """BC keeps customers and items that open documents still use."""
    if entity.name == "customers":
        for name, caption in (("salesOrders", "Sales Order"), ("salesInvoices", "Sales Invoice")):
            for doc in records.store.table(name).rows.values():
                outstanding = name == "salesOrders" or doc.data["status"] == "Draft"
                if doc.data["customerId"] == row.data["id"] and outstanding:
                    raise bad_request(f"You cannot delete Customer {row.data['number']} because there is at "
                                      f"least one outstanding {caption} for this customer.",
                                      "Internal_ErrorOnDelete")
    elif entity.name == "items":
        for name in ("salesOrderLines", "salesInvoiceLines"):
            for line in records.store.table(name).rows.values():
                if line.data["itemId"] != row.data["id"]:
                    continue
                header = records.store.table(LINES_OF_HEADER[name]).rows.get(line.data["documentId"])
                if header is not None and (name == "salesOrderLines" or header.data["status"] == "Draft"):
                    raise bad_request(f"You cannot delete Item {row.data['number']} because there is at least "
                                      "one outstanding sales document that includes this item.",
                                      "Internal_ErrorOnDelete")


def _check_line_editable(records: Records, entity: EntityDef, header_id: str) -> Row:
    assert entity.parent
    header = records.get(entity.parent, header_id)
    if entity.parent == "salesInvoices" and header.data["status"] != "Draft":
        raise bad_request("You cannot modify the lines of a posted sales invoice.", "Internal_DocumentPosted")
    return header


def resolve_header(records: Records, entity: EntityDef, data: dict[str, Any],
                   old: dict[str, Any] | None) -> None:
    old = old or {}
    customer = None
    if data["customerId"] != old.get("customerId", EMPTY_GUID) and data["customerId"] != EMPTY_GUID:
        customer = records.store.table("customers").rows.get(data["customerId"])
        if customer is None:
            raise not_found("Customer", data["customerId"])
    elif data["customerNumber"] and data["customerNumber"] != old.get("customerNumber", ""):
        customer = records.by_code("customers", data["customerNumber"])
        if customer is None:
            raise bad_request(f"The Customer does not exist. Identification fields and values: "
                              f"No.='{data['customerNumber']}'", "BadRequest_NotFound")
    if customer is None and not old:
        raise bad_request(f"The field Sell-to Customer No. of table {entity.caption} must have a value.",
                          "Internal_FieldMustHaveValue")
    today = records.store.clock.now().date().isoformat()
    for date_field in ("orderDate", "invoiceDate", "postingDate"):
        if date_field in data and not data[date_field]:
            data[date_field] = today
    if "dueDate" in data and not data["dueDate"]:
        data["dueDate"] = (records.store.clock.now().date() + timedelta(days=30)).isoformat()
    if customer is not None:
        _copy_customer(data, customer.data, keep=old)
    if not old or "discountAmount" in data:
        recompute(records, entity.name, data)


def _copy_customer(data: dict[str, Any], customer: dict[str, Any], keep: dict[str, Any]) -> None:
    data["customerId"], data["customerNumber"] = customer["id"], customer["number"]
    data["customerName"] = customer["displayName"]
    data["billToCustomerId"], data["billToCustomerNumber"] = customer["id"], customer["number"]
    for who in ("billTo", "shipTo"):
        if not data[f"{who}Name"] or keep:
            data[f"{who}Name"] = customer["displayName"]
    for who in ("sellTo", "billTo", "shipTo"):
        for part in _ADDRESS:
            data[who + part] = customer[part[0].lower() + part[1:]]
        data[who + "PostCode"] = customer["postalCode"]
    for src, dst in (("phoneNumber", "phoneNumber"), ("email", "email")):
        data[dst] = data[dst] or customer[src]
    if not data["salesperson"]:
        data["salesperson"] = customer["salespersonCode"]
    if not data["currencyCode"] and customer["currencyCode"]:
        data["currencyCode"], data["currencyId"] = customer["currencyCode"], customer["currencyId"]


def resolve_line(records: Records, data: dict[str, Any]) -> None:
    if data["lineType"] not in LINE_TYPE.names:
        raise bad_request(f"'{data['lineType']}' is not a valid lineType.")
    if data["lineType"] == "Item":
        item = None
        if data["itemId"] != EMPTY_GUID:
            item = records.store.table("items").rows.get(data["itemId"])
            if item is None:
                raise not_found("Item", data["itemId"])
        elif data["lineObjectNumber"]:
            item = records.by_code("items", data["lineObjectNumber"])
            if item is None:
                raise bad_request(f"The Item does not exist. Identification fields and values: "
                                  f"No.='{data['lineObjectNumber']}'", "BadRequest_NotFound")
        if item is not None:
            changed = item.data["number"] != data["lineObjectNumber"]
            data["itemId"], data["lineObjectNumber"] = item.data["id"], item.data["number"]
            if changed or not data["description"]:
                data["description"] = item.data["displayName"]
            if changed and not data["unitPrice"]:
                data["unitPrice"] = item.data["unitPrice"]
            if not data["unitOfMeasureCode"]:
                data["unitOfMeasureCode"] = item.data["baseUnitOfMeasureCode"]
                data["unitOfMeasureId"] = item.data["baseUnitOfMeasureId"]
    if data["lineType"] == "Comment":
        data["quantity"] = data["unitPrice"] = 0.0
    gross = data["quantity"] * data["unitPrice"]
    if data["discountPercent"]:
        data["discountAmount"] = _round(gross * data["discountPercent"] / 100)
    amount = _round(gross - data["discountAmount"])
    tax = _round(amount * data["taxPercent"] / 100)
    data.update(amountExcludingTax=amount, totalTaxAmount=tax, amountIncludingTax=_round(amount + tax),
                netAmount=amount, netTaxAmount=tax, netAmountIncludingTax=_round(amount + tax))


def recompute(records: Records, header_name: str, data: dict[str, Any],
              lines: list[dict[str, Any]] | None = None) -> None:
    if lines is None:
        lines = [r.data for r in lines_of(records, header_name, data["id"])]
    amount = _round(sum(line["amountExcludingTax"] for line in lines) - data["discountAmount"])
    tax = _round(sum(line["totalTaxAmount"] for line in lines))
    data.update(totalAmountExcludingTax=amount, totalTaxAmount=tax,
                totalAmountIncludingTax=_round(amount + tax))
    if "fullyShipped" in data:
        data["fullyShipped"] = bool(lines) and all(
            line["shippedQuantity"] >= line["quantity"] for line in lines)


def save_line(records: Records, entity: EntityDef, data: dict[str, Any], created: bool) -> Row:
    assert entity.parent
    header = _check_line_editable(records, entity, data["documentId"])
    if created and not data["sequence"]:
        existing = lines_of(records, entity.parent, data["documentId"])
        data["sequence"] = (existing[-1].data["sequence"] if existing else 0) + 10000
    row = records.store.put(entity.name, data, change=None)
    _refresh_header(records, entity.parent, header)
    return row


def delete_line(records: Records, entity: EntityDef, row: Row) -> None:
    assert entity.parent
    header = _check_line_editable(records, entity, row.data["documentId"])
    records.store.remove(entity.name, row.data["id"], notify=False)
    _refresh_header(records, entity.parent, header)


def delete_lines(records: Records, header_name: str, header_id: str) -> None:
    for line in lines_of(records, header_name, header_id):
        records.store.remove(LINES_OF[header_name], line.data["id"], notify=False)


def _refresh_header(records: Records, header_name: str, header: Row) -> None:
    """A line change is a change of its header: new totals, ETag, time and an `updated` notification."""
    data = dict(header.data)
    recompute(records, header_name, data)
    records.store.put(header_name, data)


def insert_lines(records: Records, header_name: str, header_id: str, lines: Any) -> None:
    """Deep insert: `salesOrderLines` inside the POST of a salesOrder."""
    if not lines:
        return
    if not isinstance(lines, list):
        raise bad_request(f"The property '{LINES_OF[header_name]}' must be an array.")
    for line in lines:
        if not isinstance(line, dict):
            raise bad_request("A line must be an object.")
        records.create(LINES_OF[header_name], {**line, "documentId": header_id}, parent_id=header_id)


# ---- actions ------------------------------------------------------------------------------------
def ship(records: Records, order_id: str) -> Row:
    """Ship every line completely (the human user's "Post → Ship")."""
    order = records.get("salesOrders", order_id)
    with records.store.transaction():
        lines = lines_of(records, "salesOrders", order.data["id"])
        if not any(line.data["quantity"] for line in lines):
            raise bad_request("There is nothing to post.", "Internal_NothingToPost")
        for line in lines:
            records.store.put("salesOrderLines", {**line.data, "shippedQuantity": line.data["quantity"],
                                                  "shipQuantity": 0.0}, change=None)
        data = {**order.data, "status": "Open"}
        recompute(records, "salesOrders", data)
        return records.store.put("salesOrders", data)


def ship_and_invoice(records: Records, order_id: str) -> Row:
    """`Microsoft.NAV.shipAndInvoice`: the order is deleted, a posted invoice takes its place."""
    order = records.get("salesOrders", order_id)
    with records.store.transaction():
        lines = lines_of(records, "salesOrders", order.data["id"])
        if not any(line.data["quantity"] for line in lines):
            raise bad_request("There is nothing to post.", "Internal_NothingToPost")
        invoice_fields = ENTITIES["salesInvoices"].fields
        data = {k: v for k, v in order.data.items() if k in invoice_fields}
        today = records.store.clock.now().date()
        data.update({
            **{k: v for k, v in invoice_fields.items() if k not in data},
            "id": str(uuid.uuid4()), "number": records.store.next_number(POSTED_INVOICE_PREFIX),
            "orderId": order.data["id"], "orderNumber": order.data["number"],
            "invoiceDate": today.isoformat(), "postingDate": today.isoformat(),
            "dueDate": (today + timedelta(days=30)).isoformat(), "status": "Draft",
        })
        records.store.put("salesInvoices", data, change=None)
        line_fields = ENTITIES["salesInvoiceLines"].fields
        for line in lines:
            copy = {k: v for k, v in line.data.items() if k in line_fields}
            copy.update(id=str(uuid.uuid4()), documentId=data["id"])
            records.store.put("salesInvoiceLines", copy, change=None)
        delete_lines(records, "salesOrders", order.data["id"])
        records.store.remove("salesOrders", order.data["id"])
        return _post(records, records.get("salesInvoices", data["id"]), new_number=False, created=True)


def post_invoice(records: Records, invoice_id: str) -> Row:
    """`Microsoft.NAV.post` on a draft: same id, a new number from the posted series, status Open."""
    invoice = records.get("salesInvoices", invoice_id)
    if invoice.data["status"] != "Draft":
        raise bad_request("The sales invoice has already been posted.", "Internal_DocumentPosted")
    with records.store.transaction():
        if not any(line.data["quantity"] for line in lines_of(records, "salesInvoices", invoice.data["id"])):
            raise bad_request("There is nothing to post.", "Internal_NothingToPost")
        return _post(records, invoice, new_number=True, created=False)


def _post(records: Records, invoice: Row, new_number: bool, created: bool) -> Row:
    data = dict(invoice.data)
    recompute(records, "salesInvoices", data)
    if new_number:
        old_number = data["number"]
        data["number"] = records.store.next_number(POSTED_INVOICE_PREFIX)
        records.store.table("salesInvoices").by_unique.pop(old_number.upper(), None)
    data["status"] = "Open" if data["totalAmountIncludingTax"] > 0 else "Paid"
    data["remainingAmount"] = data["totalAmountIncludingTax"]
    row = records.store.put("salesInvoices", data, change=None)
    change = "created" if created else "updated"
    stamped = row.modified - timedelta(milliseconds=1) if records.store.notification_time == "trigger" else row.modified
    records.store.emit(ENTITIES["salesInvoices"], data["id"], change, stamped)
    _add_balance(records, data["customerId"], data["remainingAmount"])
    return row


def pay(records: Records, invoice_id: str, amount: float | None) -> Row:
    """A customer payment applied to a posted invoice: full (amount None) or partial."""
    invoice = records.get("salesInvoices", invoice_id)
    if invoice.data["status"] not in ("Open", "Paid"):
        raise bad_request(f"Only posted invoices can be paid (status {invoice.data['status']}).")
    remaining = invoice.data["remainingAmount"]
    paid = remaining if amount is None else min(float(amount), remaining)
    if paid <= 0:
        raise bad_request("The amount must be positive and the invoice must have a remaining amount.")
    with records.store.transaction():
        left = _round(remaining - paid)
        row = records.store.put("salesInvoices", {**invoice.data, "remainingAmount": left,
                                                  "status": "Paid" if left <= 0 else "Open"})
        _add_balance(records, invoice.data["customerId"], -paid)
        return row


def cancel_invoice(records: Records, invoice_id: str) -> Row:
    """`Microsoft.NAV.cancel`: an unpaid posted invoice becomes Canceled (BC posts a credit memo)."""
    invoice = records.get("salesInvoices", invoice_id)
    data = invoice.data
    if data["status"] != "Open" or data["remainingAmount"] != data["totalAmountIncludingTax"]:
        raise bad_request("Only an open, unpaid posted invoice can be canceled.")
    with records.store.transaction():
        row = records.store.put("salesInvoices", {**data, "status": "Canceled", "remainingAmount": 0.0})
        _add_balance(records, data["customerId"], -data["remainingAmount"])
        return row


def _add_balance(records: Records, customer_id: str, delta: float) -> None:
    # balanceDue is a FlowField in BC (summed from ledger entries): it changes without a new
    # ETag, lastModifiedDateTime or webhook, so it is updated in place.
    customer = records.store.table("customers").rows.get(customer_id)
    if customer is not None and delta:
        customer.data["balanceDue"] = _round(customer.data["balanceDue"] + delta)
