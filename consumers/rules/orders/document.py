"""The BC sales order a Sales order becomes, as plain data: functions of the Sales order, its lines and the
references already resolved for them (the customer's id, the currency code, the salesperson's code, the item
or resource and the unit code of each product line). No HTTP, no store: the rule (rule.py) reads and resolves,
this decides what BC gets — and, for an order BC already has, which writes make BC's order that one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consumers.rules.values import money, text_toward_bc

SUBMITTED, CANCELED, FULFILLED = 1, 2, 3  # salesorder statecode
# Dataverse bill-to/ship-to column suffix → BC document field suffix, BC length.
ADDRESS_PARTS = (("name", "Name", 100), ("line1", "AddressLine1", 100), ("line2", "AddressLine2", 50),
                 ("city", "City", 30), ("stateorprovince", "State", 30), ("postalcode", "PostCode", 20),
                 ("country", "Country", 10))
SEQUENCE_STEP = 10000  # BC numbers document lines 10000, 20000, …


def date_only(value: Any) -> str:
    return str(value)[:10] if value else "0001-01-01"


def is_shipped(order: dict[str, Any]) -> bool:
    """Anything shipped: BC no longer lets the order be rewritten from Sales."""
    return any(float(line.get("shippedQuantity") or 0) > 0 for line in order.get("salesOrderLines") or [])


def fully_shipped(order: dict[str, Any]) -> bool:
    lines = [line for line in order.get("salesOrderLines") or [] if line.get("lineType") != "Comment"]
    if order.get("fullyShipped"):
        return True
    return bool(lines) and all(float(line.get("shippedQuantity") or 0) >= float(line.get("quantity") or 0)
                               for line in lines)


def sorted_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sales order lines in document order (line number, then creation, then id)."""
    return sorted(lines, key=lambda r: (r.get("lineitemnumber") or 0, r.get("createdon") or "",
                                        r["salesorderdetailid"]))


def is_write_in(line: dict[str, Any]) -> bool:
    """A write-in product (or a line without a product): a Comment line in BC, nothing to resolve."""
    return bool(line.get("isproductoverridden")) or not line.get("_productid_value")


def addresses(order: dict[str, Any]) -> dict[str, Any]:
    """The bill-to and ship-to fields the Sales order fills (blank ones are left to BC: the customer's)."""
    out: dict[str, Any] = {}
    for who, prefix in (("billto", "billTo"), ("shipto", "shipTo")):
        for part, suffix, length in ADDRESS_PARTS:
            value = order.get(f"{who}_{part}")
            if value:
                out[prefix + suffix] = text_toward_bc(value, length)
    return out


def header(order: dict[str, Any], customer_id: str, currency: dict[str, Any],
           salesperson_code: str | None) -> dict[str, Any]:
    """The BC order header. `currency`: `{"currencyCode": …}` or `{}` (no currency on the order);
    `salesperson_code`: None or "" leaves BC's default (the customer's salesperson)."""
    out: dict[str, Any] = {"customerId": customer_id,
                           "externalDocumentNumber": text_toward_bc(order.get("name"), 35),
                           "requestedDeliveryDate": date_only(order.get("requestdeliveryby"))}
    out.update(currency)
    if salesperson_code:
        out["salesperson"] = salesperson_code
    out.update(addresses(order))
    return out


def line(sales_line: dict[str, Any], index: int, product: dict[str, Any] | None = None,
         unit_code: str | None = None) -> dict[str, Any]:
    """The BC line for the index-th Sales line (1-based). `product`: the resolved `{"lineType": "Item", "itemId"}`
    or `{"lineType": "Resource", "lineObjectNumber"}`; unused for a write-in line, which becomes a Comment."""
    sequence = index * SEQUENCE_STEP
    if is_write_in(sales_line) or product is None:
        return {"sequence": sequence, "lineType": "Comment",
                "description": text_toward_bc(sales_line.get("productdescription") or sales_line.get("description"),
                                              100)}
    out: dict[str, Any] = {"sequence": sequence, **product, "quantity": float(sales_line.get("quantity") or 0),
                           "discountAmount": money(sales_line.get("manualdiscountamount"))}
    if sales_line.get("priceperunit") is not None:
        out["unitPrice"] = money(sales_line.get("priceperunit"))
    if unit_code:
        out["unitOfMeasureCode"] = unit_code
    return out


def bc_currency(code: Any, local_currency: str) -> str:
    """A BC currency code with the local currency blank (as consumers/rules/lookups.py `bc_currency`): API v2.0
    shows a blank currency as the LCY code and reads that code back as blank."""
    text = str(code or "").strip().upper()
    return "" if text == local_currency.upper() else text


def header_changes(target: dict[str, Any], wanted: dict[str, Any], local_currency: str) -> dict[str, Any]:
    """The header fields BC's order does not have yet (the LCY code and a blank currency are the same)."""
    return {k: v for k, v in wanted.items() if target.get(k) != v
            and not (k == "currencyCode" and bc_currency(v, local_currency) == bc_currency(target.get(k),
                                                                                              local_currency))}


@dataclass(frozen=True)
class LineStep:
    """One write to BC's order lines: `patch` (the changed fields of line `line_id`), `add` (a new line for Sales
    line `sales_line_id`) or `remove` (line `line_id`)."""

    kind: str
    line_id: str | None = None
    sales_line_id: str | None = None
    body: dict[str, Any] | None = None


@dataclass
class OrderUpdate:
    """What makes BC's order the wanted one: the header's changed fields, then the line steps in order."""

    header: dict[str, Any]
    steps: list[LineStep] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # Sales line id → BC line id of the lines that stay

    def __bool__(self) -> bool:
        return bool(self.header or self.steps)

    def count(self, kind: str) -> int:
        return sum(1 for step in self.steps if step.kind == kind)

    def lines_summary(self) -> str | None:
        """"1 added, 2 changed, 1 removed" (None: the lines stay as they are)."""
        parts = [f"{n} {word}" for n, word in ((self.count("add"), "added"), (self.count("patch"), "changed"),
                                                (self.count("remove"), "removed")) if n]
        return ", ".join(parts) or None


def plan_update(target: dict[str, Any], wanted_header: dict[str, Any], lines: list[dict[str, Any]],
                bc_lines: list[dict[str, Any]], old_map: dict[str, str], local_currency: str) -> OrderUpdate:
    """Compare BC's order (`target`, with its `salesOrderLines`) with the wanted one: its header, the Sales lines
    (`lines`) and the BC lines made of them (`bc_lines`, same order). A Sales line's BC line is the one the
    coupling's line map names (`old_map`); lines without a known counterpart (an order matched, not created by
    us) pair up by sequence. A paired line of the same type is patched where it differs; otherwise a new line
    is added (and the old one removed). BC lines no Sales line keeps are removed."""
    existing = {str(row["id"]): row for row in target.get("salesOrderLines") or []}
    mapped = set(old_map.values())
    unmapped = {row.get("sequence"): row for line_id, row in existing.items() if line_id not in mapped}
    update = OrderUpdate(header_changes(target, wanted_header, local_currency))
    for sales_line, wanted in zip(lines, bc_lines, strict=True):
        sales_id = str(sales_line["salesorderdetailid"]).lower()
        current = existing.get(old_map.get(sales_id, "")) or unmapped.pop(wanted["sequence"], None)
        if current is not None and current.get("lineType") == wanted["lineType"]:
            delta = {k: v for k, v in wanted.items() if k != "sequence" and current.get(k) != v}
            if delta:
                update.steps.append(LineStep("patch", str(current["id"]), sales_id, delta))
            update.kept[sales_id] = str(current["id"])
        else:
            update.steps.append(LineStep("add", None, sales_id, wanted))
    kept = set(update.kept.values())
    update.steps.extend(LineStep("remove", line_id) for line_id in existing if line_id not in kept)
    return update
