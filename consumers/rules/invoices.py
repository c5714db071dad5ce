"""POSTEDSALESINV-INV: a posted BC sales invoice → a Sales invoice with its lines; its order becomes Invoiced.

Posted or draft: BC's `salesInvoices` holds both. An invoice is posted when its `status` is Paid, Canceled or
Corrective, or when it is Open with a `remainingAmount` above zero (a posted invoice owes money until it is
paid; a released draft — which BC may also show as Open — has no customer ledger entry, so its remaining
amount is 0). Draft and In Review are never posted. Drafts are skipped.

Writes (Dataverse, in this order): the invoice header (found by the coupling, else by `invoicenumber`, else
created), its lines (rebuilt when they differ and the invoice is still open), the state — Billed (0/4) first,
then Paid/Partial (2/100002) while 0 < remainingAmount < total, Paid/Complete (2/100001) at 0; Canceled
(3/100003) for an invoice BC canceled — and the originating Sales order (the SALESORDER-ORDER coupling of
`orderId`) becomes Invoiced (4/100003). Lines: Item lines → the item's coupled product (synchronized first if
need be); Resource lines → the resource's coupled product; Comment lines and any line without a product →
write-in lines (`isproductoverridden`, the BC description; a comment has quantity and price 0), so the Sales
invoice shows every BC line and its totals stay equal to BC's. A repeated or late notification re-reads BC
and ends in the same state (hash of everything written kept in the coupling).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from consumers.errors import MappingUnavailable, Skip, SyncFailure
from consumers.rules import lookups
from consumers.rules.base import Rule, parse_time
from consumers.rules.context import odata_text
from consumers.rules.orders import ADDRESS_PARTS
from consumers.rules.values import money, text_toward_dataverse
from schemas.mappings import CUSTOM_API
from service.connectors.http import NotFound
from service.store import couplings

if TYPE_CHECKING:
    from consumers.sync import Applied, SyncEngine
    from schemas.events import ChangeEvent
    from service.store.models import Coupling

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
BILLED, PAID_PARTIAL, PAID_COMPLETE, CANCELED = (0, 4), (2, 100002), (2, 100001), (3, 100003)
INVOICED = {"statecode": 4, "statuscode": 100003}


def is_posted(invoice: dict[str, Any]) -> bool:
    """Posted, not a draft (see the module's docstring for the rule)."""
    status = str(invoice.get("status") or "")
    if status in ("Paid", "Canceled", "Corrective"):
        return True
    return status == "Open" and float(invoice.get("remainingAmount") or 0) > 0


def wanted_state(invoice: dict[str, Any]) -> tuple[int, int]:
    if invoice.get("status") == "Canceled":
        return CANCELED
    total = float(invoice.get("totalAmountIncludingTax") or 0)
    remaining = float(invoice.get("remainingAmount") or 0)
    if invoice.get("status") == "Paid" or remaining <= 0.005:
        return PAID_COMPLETE
    return PAID_PARTIAL if remaining < total - 0.005 else BILLED


def line_key(line: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two invoice lines the same (a wanted line, or one read back from Dataverse)."""
    product = line.get("_productid_value") or str(line.get("productid@odata.bind") or "").rpartition("(")[2].rstrip(")")
    return (str(product or "").lower(), line.get("productdescription") if line.get("isproductoverridden") else None,
            round(float(line.get("quantity") or 0), 5), round(float(line.get("priceperunit") or 0), 2),
            round(float(line.get("manualdiscountamount") or 0), 2))


class InvoiceRule(Rule):
    def handles(self, side: str, entity: str) -> bool:
        return side == "bc" and entity == self.mapping.bc_entity

    async def event_record_id(self, side: str, event: ChangeEvent) -> str | None:
        return event.record_id if side == "bc" else None

    async def apply(self, engine: SyncEngine, side: str, record_id: str, coupling: Coupling | None, deleted: bool,
                    record: dict[str, Any] | None) -> Applied | None:
        from consumers.sync import Applied, digest

        if side != "bc":
            raise Skip("invoices flow from Business Central to Dynamics 365 Sales only")
        invoice = None if deleted else await self.ctx.bc.get("salesInvoices", record_id, expand="salesInvoiceLines")
        if invoice is None:
            raise Skip("the invoice does not exist (a deleted draft)")
        if not is_posted(invoice):
            raise Skip(f"a draft invoice (status {invoice.get('status')}, nothing remaining)")
        if not self.included("bc", invoice):
            raise Skip("excluded by the mapping's filter")
        state = wanted_state(invoice)
        header, lines, order_id = await self.dv_invoice(invoice)
        source_hash = digest({"header": header, "lines": [list(line_key(x)) for x in lines], "state": state,
                              "order": order_id})
        if coupling is not None and coupling.bc_hash == source_hash:
            return Applied("unchanged", "to_crm", coupling.dataverse_id)
        dv = self.ctx.dv
        existing = await dv.get("invoices", coupling.dataverse_id) if coupling is not None else None
        result = "modified"
        if existing is None:
            number = str(invoice["number"])
            async for row in dv.list("invoices", filter=f"invoicenumber eq {odata_text(number)}", page_size=2):
                existing, result = row, "coupled"
        if existing is None:
            if state == CANCELED:
                raise Skip("a canceled invoice that never reached Dynamics 365 Sales")
            existing, result = await dv.create("invoices", header), "inserted"
        invoice_id = str(existing["invoiceid"]).lower()
        current = (int(existing.get("statecode") or 0), int(existing.get("statuscode") or 0))
        if current[0] != 0 and state[0] == 0:  # e.g. a payment reversed in BC: open it again
            current = await self._set_state(invoice_id, state)
        if current[0] == 0:
            if result != "inserted":
                await dv.update("invoices", invoice_id, header)
            await self._lines(invoice_id, lines)
            if current != BILLED:
                current = await self._set_state(invoice_id, BILLED)  # Billed first, then paid
        if current != state:
            await self._set_state(invoice_id, state)
        if order_id:
            order = await dv.get("salesorders", order_id, select=["statecode", "statuscode"])
            if order is not None and order.get("statecode") not in (2, 4):
                await dv.update("salesorders", order_id, dict(INVOICED))
        async with self.ctx.db.session() as session:
            saved = await couplings.save(
                session, self.name, record_id, invoice_id, bc_hash=source_hash, dataverse_hash=None,
                bc_modified=parse_time(invoice.get("lastModifiedDateTime")), last_result="ok", attempts=0,
                info=json.dumps({"number": invoice.get("number"), "orderNumber": invoice.get("orderNumber") or None}))
        return Applied(result, "to_crm", invoice_id, self.modified("bc", invoice),
                       saved if coupling is None else None)

    async def _set_state(self, invoice_id: str, state: tuple[int, int]) -> tuple[int, int]:
        await self.ctx.dv.update("invoices", invoice_id, {"statecode": state[0], "statuscode": state[1]})
        return state

    async def _lines(self, invoice_id: str, wanted: list[dict[str, Any]]) -> None:
        """Make the invoice's lines the wanted ones (all rebuilt when they differ: posted lines never change,
        so this only repairs an earlier attempt that stopped halfway)."""
        dv = self.ctx.dv
        present = [row async for row in dv.list("invoicedetails", filter=f"_invoiceid_value eq {invoice_id}")]
        if sorted(map(line_key, present)) == sorted(map(line_key, wanted)):
            return
        for row in present:
            await dv.delete("invoicedetails", str(row["invoicedetailid"]))
        for line in wanted:
            await dv.create("invoicedetails", {**line, "invoiceid@odata.bind": f"/invoices({invoice_id})"})

    # --- BC invoice → Sales invoice ------------------------------------------------------------------------------

    async def dv_invoice(self, invoice: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
        ctx = self.ctx
        account_id = await lookups.resolve(ctx, "CUSTOMER", "bc", str(invoice["customerId"]))
        if account_id is None:
            raise SyncFailure(f"customer {invoice.get('customerNumber')} of invoice {invoice.get('number')} does not "
                              "take part in CUSTOMER (blocked or filtered)")
        number = str(invoice["number"])
        header: dict[str, Any] = {
            "name": text_toward_dataverse(f"{number} {invoice.get('customerName') or ''}"),
            "invoicenumber": number,
            "customerid@odata.bind": f"/accounts({account_id})",
            "duedate": f"{invoice['dueDate']}T00:00:00Z" if invoice.get("dueDate") else None,
            "discountamount": money(invoice.get("discountAmount")),
            "totalamountlessfreight": money(invoice.get("totalAmountExcludingTax")),
            "totaltax": money(invoice.get("totalTaxAmount")),
            "totalamount": money(invoice.get("totalAmountIncludingTax")),
        }
        header.update(await lookups.currency_to_dataverse(ctx, str(invoice.get("currencyCode") or "")))
        header.update(await lookups.salesperson_to_dataverse(ctx, str(invoice.get("salesperson") or "")))
        for who, prefix in (("billto", "billTo"), ("shipto", "shipTo")):
            for part, suffix, _length in ADDRESS_PARTS:
                header[f"{who}_{part}"] = text_toward_dataverse(invoice.get(prefix + suffix))
        order_id = None
        if invoice.get("orderId") and invoice["orderId"] != EMPTY_GUID:
            order_id = await lookups.coupled_id(ctx, "SALESORDER-ORDER", "bc", str(invoice["orderId"]))
        if order_id:
            header["salesorderid@odata.bind"] = f"/salesorders({order_id})"
        units: dict[str, str | None] = {}
        bc_lines = sorted(invoice.get("salesInvoiceLines") or [], key=lambda r: r.get("sequence") or 0)
        lines = [await self._line(line, index, units) for index, line in enumerate(bc_lines, 1)]
        return header, lines, order_id

    async def _line(self, line: dict[str, Any], index: int, units: dict[str, str | None]) -> dict[str, Any]:
        quantity, price = float(line.get("quantity") or 0), money(line.get("unitPrice"))
        out: dict[str, Any] = {
            "lineitemnumber": index, "quantity": quantity, "priceperunit": price, "ispriceoverridden": True,
            "manualdiscountamount": money(line.get("discountAmount")),
            "baseamount": round(quantity * price, 2), "extendedamount": money(line.get("amountExcludingTax")),
        }
        product_id = await self._product(line)
        if product_id is None:
            out.update(isproductoverridden=True,
                       productdescription=text_toward_dataverse(line.get("description")) or line.get("lineType"))
            return out
        out.update({"isproductoverridden": False, "productid@odata.bind": f"/products({product_id})"})
        if product_id not in units:
            product = await self.ctx.dv.get("products", product_id, select=["_defaultuomid_value"])
            units[product_id] = (product or {}).get("_defaultuomid_value")
        if units[product_id]:
            out["uomid@odata.bind"] = f"/uoms({units[product_id]})"
        return out

    async def _product(self, line: dict[str, Any]) -> str | None:
        kind = line.get("lineType")
        if kind == "Item" and line.get("itemId") and line["itemId"] != EMPTY_GUID:
            return await lookups.resolve(self.ctx, "ITEM-PRODUCT", "bc", str(line["itemId"]))
        if kind == "Resource" and line.get("lineObjectNumber"):
            try:
                async for resource in self.ctx.bc.list("resources", api=CUSTOM_API, page_size=2,
                                                       filter=f"number eq {odata_text(str(line['lineObjectNumber']))}"):
                    return await lookups.resolve(self.ctx, "RESOURCE-PRODUCT", "bc", str(resource["id"]))
            except (NotFound, MappingUnavailable):  # no bcsync extension, or RESOURCE-PRODUCT kept off: the
                return None  # line becomes a write-in line (description, quantity, price), as a comment does
        return None


__all__ = ["InvoiceRule", "is_posted", "wanted_state"]
