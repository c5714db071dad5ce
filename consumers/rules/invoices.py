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

from consumers.errors import Filtered, MappingUnavailable, Skip, SyncFailure
from consumers.rules import lookups
from consumers.rules.base import Rule, parse_time
from consumers.rules.orders.document import ADDRESS_PARTS
from consumers.rules.values import money, text_toward_dataverse
from schemas.mappings import CUSTOM_API
from schemas.odata_filter import odata_text
from schemas.vocabulary import Applied, FieldChange, Result, Side, digest
from service.connectors.http import NotFound
from service.store import couplings

if TYPE_CHECKING:
    from consumers.rules.record_run import RecordRun
    from schemas.events import ChangeEvent

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
BILLED, PAID_PARTIAL, PAID_COMPLETE, CANCELED = (0, 4), (2, 100002), (2, 100001), (3, 100003)
INVOICED = {"statecode": 4, "statuscode": 100003}
TO_SALES = Side.DATAVERSE.toward


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


def holds(record: dict[str, Any], key: str, value: Any) -> bool:
    """Whether a Dataverse record already has this value (a lookup `<column>@odata.bind` as `_<column>_value`)."""
    if key.endswith("@odata.bind"):
        current = record.get(f"_{key.removesuffix('@odata.bind')}_value")
        return str(current or "").lower() == str(value or "").rpartition("(")[2].rstrip(")").lower()
    current = record.get(key)
    return bool(current == value) or (current in (None, "") and value in (None, ""))


def line_key(line: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two invoice lines the same (a wanted line, or one read back from Dataverse)."""
    product = line.get("_productid_value") or str(line.get("productid@odata.bind") or "").rpartition("(")[2].rstrip(")")
    return (str(product or "").lower(), line.get("productdescription") if line.get("isproductoverridden") else None,
            round(float(line.get("quantity") or 0), 5), round(float(line.get("priceperunit") or 0), 2),
            round(float(line.get("manualdiscountamount") or 0), 2))


class InvoiceRule(Rule):
    def handles(self, side: str, entity: str) -> bool:
        return side == Side.BC and entity == self.mapping.bc_entity

    async def event_record_id(self, side: str, event: ChangeEvent) -> str | None:
        return event.record_id if side == Side.BC else None

    async def apply(self, run: RecordRun) -> Applied:
        """Always read BC's invoice again (with its lines), whatever the run brings: a listing's copy has none."""
        if run.side != Side.BC:
            raise Skip("invoices flow from Business Central to Dynamics 365 Sales only")
        record_id, coupling = run.record_id, run.coupling
        invoice = None if run.deleted else await self.ctx.bc.get("salesInvoices", record_id,
                                                                 expand="salesInvoiceLines")
        run.record = invoice or run.record
        if invoice is None:
            raise Skip("the invoice does not exist (a deleted draft)")
        if not is_posted(invoice):
            raise Skip(f"a draft invoice (status {invoice.get('status')}, nothing remaining)")
        if not self.included(Side.BC, invoice):
            raise Filtered("excluded by the mapping's filter")
        state = wanted_state(invoice)
        header, lines, order_id = await self.dv_invoice(invoice)
        source_hash = digest({"header": header, "lines": [list(line_key(x)) for x in lines], "state": state,
                              "order": order_id})
        number = str(invoice["number"])
        if coupling is not None and coupling.bc_hash == source_hash:
            return Applied(Result.UNCHANGED, TO_SALES, coupling.dataverse_id,
                           reason=f"invoice {number} is as it was last written to Dynamics 365 Sales")
        dv = self.ctx.dv
        existing = await dv.get("invoices", coupling.dataverse_id) if coupling is not None else None
        result = Result.MODIFIED
        if existing is None:
            async for row in dv.list("invoices", filter=f"invoicenumber eq {odata_text(number)}", page_size=2):
                existing, result = row, Result.COUPLED
        changes: list[FieldChange] = []
        if existing is None:
            if state == CANCELED:
                raise Skip("a canceled invoice that never reached Dynamics 365 Sales")
            existing, result = await dv.create("invoices", header), Result.INSERTED
            changes += [FieldChange(Side.DATAVERSE, key, None, value) for key, value in header.items()]
        invoice_id = str(existing["invoiceid"]).lower()
        run.target = existing
        current = (int(existing.get("statecode") or 0), int(existing.get("statuscode") or 0))
        before = current
        if current[0] != 0 and state[0] == 0:  # e.g. a payment reversed in BC: open it again
            current = await self._set_state(invoice_id, state)
        if current[0] == 0:
            if result != Result.INSERTED:
                await dv.update("invoices", invoice_id, header)
                changes += [FieldChange(Side.DATAVERSE, key, existing.get(key), value)
                            for key, value in header.items() if not holds(existing, key, value)]
            rebuilt = await self._lines(invoice_id, lines)
            if rebuilt is not None:
                changes.append(FieldChange(Side.DATAVERSE, "lines", f"{rebuilt} lines", f"{len(lines)} lines"))
            if current != BILLED:
                current = await self._set_state(invoice_id, BILLED)  # Billed first, then paid
        if current != state:
            await self._set_state(invoice_id, state)
        changes += [FieldChange(Side.DATAVERSE, column, old, new)
                    for column, old, new in zip(("statecode", "statuscode"), before, state, strict=True) if old != new]
        if order_id:
            order = await dv.get("salesorders", order_id, select=["statecode", "statuscode"])
            if order is not None and order.get("statecode") not in (2, 4):
                await dv.update("salesorders", order_id, dict(INVOICED))
                changes.append(FieldChange(Side.DATAVERSE, "salesorder statecode", order.get("statecode"),
                                           INVOICED["statecode"]))
        async with self.ctx.db.session() as session:
            saved = await couplings.save(
                session, self.name, record_id, invoice_id, bc_hash=source_hash, dataverse_hash=None,
                bc_modified=parse_time(invoice.get("lastModifiedDateTime")), last_result="ok", attempts=0,
                info=json.dumps({"number": invoice.get("number"), "orderNumber": invoice.get("orderNumber") or None}))
        reason = {Result.INSERTED: f"posted invoice {number} created in Dynamics 365 Sales",
                  Result.COUPLED: f"matched to the Dynamics 365 Sales invoice numbered {number}"}.get(
            result, f"posted invoice {number} changed in Business Central")
        return Applied(result, TO_SALES, invoice_id, self.modified(Side.BC, invoice),
                       saved if coupling is None else None, reason=reason, changes=changes)

    async def _set_state(self, invoice_id: str, state: tuple[int, int]) -> tuple[int, int]:
        await self.ctx.dv.update("invoices", invoice_id, {"statecode": state[0], "statuscode": state[1]})
        return state

    async def _lines(self, invoice_id: str, wanted: list[dict[str, Any]]) -> int | None:
        """Make the invoice's lines the wanted ones (all rebuilt when they differ: posted lines never change,
        so this only repairs an earlier attempt that stopped halfway). None: they were; else how many lines
        there were before."""
        dv = self.ctx.dv
        present = [row async for row in dv.list("invoicedetails", filter=f"_invoiceid_value eq {invoice_id}")]
        if sorted(map(line_key, present)) == sorted(map(line_key, wanted)):
            return None
        for row in present:
            await dv.delete("invoicedetails", str(row["invoicedetailid"]))
        for line in wanted:
            await dv.create("invoicedetails", {**line, "invoiceid@odata.bind": f"/invoices({invoice_id})"})
        return len(present)

    # --- BC invoice → Sales invoice ------------------------------------------------------------------------------

    async def dv_invoice(self, invoice: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
        ctx = self.ctx
        account_id = await lookups.resolve(ctx, "CUSTOMER", Side.BC, str(invoice["customerId"]))
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
            order_id = await lookups.coupled_id(ctx, "SALESORDER-ORDER", Side.BC, str(invoice["orderId"]))
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
            return await lookups.resolve(self.ctx, "ITEM-PRODUCT", Side.BC, str(line["itemId"]))
        if kind == "Resource" and line.get("lineObjectNumber"):
            try:
                async for resource in self.ctx.bc.list("resources", api=CUSTOM_API, page_size=2,
                                                       filter=f"number eq {odata_text(str(line['lineObjectNumber']))}"):
                    return await lookups.resolve(self.ctx, "RESOURCE-PRODUCT", Side.BC, str(resource["id"]))
            except (NotFound, MappingUnavailable):  # no bcsync extension, or RESOURCE-PRODUCT kept off: the
                return None  # line becomes a write-in line (description, quantity, price), as a comment does
        return None


__all__ = ["InvoiceRule", "is_posted", "wanted_state"]
