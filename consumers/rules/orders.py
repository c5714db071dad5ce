"""SALESORDER-ORDER: a Sales order that reaches Submitted becomes a BC sales order; BC's shipment comes back.

From Sales (Dataverse `salesorder` + `salesorderdetail`, statecode 1 Submitted):
- not coupled: one POST of the BC order with its lines inside (deep insert: all or nothing). The customer
  is the account's coupled customer (synchronized first if need be); item lines come from the products'
  coupled items (an uncoupled product is coupled to the item whose number is its `productnumber`);
  write-in products become Comment lines. Refused before anything is written: a blocked customer, a
  product without an item, a blocked item. The coupling keeps, in `info`, the BC order number and which
  BC line stands for which Sales line; the number is also written to the Sales column named by
  `BCSYNC_ORDER_NUMBER_COLUMN` when an installation has one.
- coupled: the BC order is updated (header and lines added/changed/removed, in one all-or-nothing
  `$batch` with `Isolation: snapshot`) while BC has shipped nothing of it; once anything is shipped a
  change is reported ("the order is already shipped in Business Central") and BC's order is left alone.
- canceled (statecode 2) or deleted: the mapping's delete policy — `remove-coupling` (default) or
  `propagate` (the BC order is deleted, unless shipped). `restore` acts as `remove-coupling` here.
A line's event is its order's event.

From BC (salesOrders notifications): a coupled order shipped completely makes the Sales order Fulfilled
(the `FulfillSalesOrder` action). A `deleted` notification of an order that BC posted (a posted invoice
names it in `orderId`) is not a cancellation: the coupling stays for POSTEDSALESINV-INV.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from consumers.errors import MissingDependency, Skip, SyncFailure
from consumers.rules import lookups
from consumers.rules.base import Rule, parse_time
from consumers.rules.context import odata_text
from consumers.rules.values import money, text_toward_bc
from schemas.mappings import CUSTOM_API, DeletePolicy
from service.connectors.http import ApiError
from service.logging import get_logger
from service.settings import Settings
from service.store import couplings

if TYPE_CHECKING:
    from consumers.sync import Applied, SyncEngine
    from schemas.events import ChangeEvent
    from service.store.models import Coupling

log = get_logger(__name__)

SUBMITTED, CANCELED, FULFILLED = 1, 2, 3
SHIPPED_MESSAGE = "the order is already shipped in Business Central"
# Dataverse bill-to/ship-to column suffix → BC document field suffix, BC length.
ADDRESS_PARTS = (("name", "Name", 100), ("line1", "AddressLine1", 100), ("line2", "AddressLine2", 50),
                 ("city", "City", 30), ("stateorprovince", "State", 30), ("postalcode", "PostCode", 20),
                 ("country", "Country", 10))


def order_number_column() -> str | None:
    """`BCSYNC_ORDER_NUMBER_COLUMN` (None when unset or when the settings cannot be read here)."""
    try:
        return Settings().order_number_column
    except (SystemExit, ValueError):  # unreadable settings: the worker's own start reports them
        return None


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


async def posted_invoice_of(rule: Rule, order_id: str) -> dict[str, Any] | None:
    """The posted BC invoice that came from this order (posting deletes the order)."""
    async for invoice in rule.ctx.bc.list("salesInvoices", filter=f"orderId eq {order_id}", page_size=2):
        return invoice
    return None


class OrderRule(Rule):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order_number_column = order_number_column()

    # --- which events ------------------------------------------------------------------------------------------

    def handles(self, side: str, entity: str) -> bool:
        if side == "dataverse":
            return entity in ("salesorder", "salesorderdetail")
        return entity == self.mapping.bc_entity

    async def event_record_id(self, side: str, event: ChangeEvent) -> str | None:
        if side != "dataverse" or event.entity != "salesorderdetail" or event.record_id is None:
            return event.record_id
        line = await self.ctx.dv.get("salesorderdetails", event.record_id)
        order_id = (line or {}).get("_salesorderid_value")
        if order_id is None and event.snapshot:  # a deleted line: its image names the order
            reference = event.snapshot.get("salesorderid")
            order_id = (reference.get("id") or reference.get("Id")) if isinstance(reference, dict) else reference
        return str(order_id).lower() if order_id else None

    def catch_up_sides(self) -> list[str]:
        """Orders flow from Sales, but BC's shipments come back: a lost shipment notice is caught up too."""
        return ["dataverse", "bc"]

    # --- applying ----------------------------------------------------------------------------------------------

    async def apply(self, engine: SyncEngine, side: str, record_id: str, coupling: Coupling | None, deleted: bool,
                    record: dict[str, Any] | None) -> Applied | None:
        if side == "bc":
            return await self._from_bc(record_id, coupling, deleted, record)
        return await self._from_sales(record_id, coupling, deleted, record)

    async def _from_sales(self, order_id: str, coupling: Coupling | None, deleted: bool,
                          order: dict[str, Any] | None) -> Applied:
        from consumers.sync import Applied, digest

        if order is None and not deleted:
            order = await self.ctx.dv.get("salesorders", order_id)
        if order is None or order.get("statecode") == CANCELED:
            return await self._canceled(order_id, coupling)
        if order.get("statecode") != SUBMITTED:
            raise Skip("the order is not Submitted")
        if not self.included("dataverse", order):
            raise Skip("excluded by the mapping's filter")
        lines = [row async for row in self.ctx.dv.list("salesorderdetails",
                                                       filter=f"_salesorderid_value eq {order_id}")]
        lines.sort(key=lambda r: (r.get("lineitemnumber") or 0, r.get("createdon") or "", r["salesorderdetailid"]))
        header, bc_lines = await self.bc_order(order, lines)
        source_hash = digest({"header": header, "lines": bc_lines})
        modified = self.modified("dataverse", order)
        if coupling is None:
            coupling = await self._match(order_id, header)
            if coupling is None:
                return await self._create(order, lines, header, bc_lines, source_hash)
            result = "coupled"
        else:
            result = "modified"
            if coupling.dataverse_hash == source_hash:
                return Applied("unchanged", "from_crm", coupling.bc_id)
        target = await self.ctx.bc.get("salesOrders", coupling.bc_id, expand="salesOrderLines")
        if target is None:
            if await posted_invoice_of(self, coupling.bc_id):
                raise SyncFailure(f"{SHIPPED_MESSAGE} and invoiced; the change was not applied")
            async with self.ctx.db.session() as session:
                await couplings.remove(session, coupling.id or 0)
            raise Skip("the coupled BC order no longer exists; the coupling was removed")
        if is_shipped(target):
            raise SyncFailure(f"{SHIPPED_MESSAGE} (order {target.get('number')}); the change made in Dynamics 365 "
                              "Sales was not applied")
        line_map = await self._update(target, lines, header, bc_lines, couplings.info(coupling).get("lines", {}))
        await self._couple(order_id, target, source_hash, line_map)
        return Applied(result, "from_crm", coupling.bc_id, modified, coupling if result == "coupled" else None)

    async def _create(self, order: dict[str, Any], lines: list[dict[str, Any]], header: dict[str, Any],
                      bc_lines: list[dict[str, Any]], source_hash: str) -> Applied:
        from consumers.sync import Applied

        order_id = str(order["salesorderid"]).lower()
        created = await self.ctx.bc.create("salesOrders", {**header, "salesOrderLines": bc_lines})  # one request
        addresses = {k: v for k, v in header.items() if k.startswith(("billTo", "shipTo")) and created.get(k) != v}
        if addresses:  # BC fills the addresses from the customer when it is set; ours come after
            created = await self.ctx.bc.update("salesOrders", created["id"], addresses, str(created["@odata.etag"]))
        full = await self.ctx.bc.get("salesOrders", created["id"], expand="salesOrderLines") or created
        by_sequence = {line.get("sequence"): line["id"] for line in full.get("salesOrderLines") or []}
        line_map = {str(dv["salesorderdetailid"]).lower(): str(by_sequence[bc["sequence"]])
                    for dv, bc in zip(lines, bc_lines, strict=True) if bc["sequence"] in by_sequence}
        coupling = await self._couple(order_id, full, source_hash, line_map)
        await self._write_back_number(order, str(full.get("number") or ""))
        log.info("sales order created in Business Central", order=order.get("ordernumber"), number=full.get("number"))
        return Applied("inserted", "from_crm", coupling.bc_id, self.modified("dataverse", order), coupling)

    async def _couple(self, order_id: str, target: dict[str, Any], source_hash: str,
                      line_map: dict[str, str]) -> Coupling:
        info = {"number": target.get("number"), "lines": line_map}
        async with self.ctx.db.session() as session:
            return await couplings.save(
                session, self.name, str(target["id"]), order_id, dataverse_hash=source_hash, bc_hash=None,
                bc_modified=parse_time(target.get("lastModifiedDateTime")), last_result="ok", attempts=0,
                info=json.dumps(info))

    async def _match(self, order_id: str, header: dict[str, Any]) -> Coupling | None:
        """A BC order of this customer with this external document number that nothing is coupled to (created
        by someone else first, or by an earlier attempt whose answer was lost)."""
        if not header.get("externalDocumentNumber"):
            return None
        filter_ = (f"externalDocumentNumber eq {odata_text(header['externalDocumentNumber'])} and customerId eq "
                   f"{header['customerId']}")
        found = []
        async for candidate in self.ctx.bc.list("salesOrders", filter=filter_, page_size=10):
            async with self.ctx.db.session() as session:
                if await couplings.find(session, self.name, "bc", str(candidate["id"])) is None:
                    found.append(candidate)
        if len(found) > 1:
            raise SyncFailure(f"{len(found)} Business Central orders match this order; couple it by hand")
        if not found:
            return None
        async with self.ctx.db.session() as session:
            return await couplings.save(session, self.name, str(found[0]["id"]), order_id,
                                        info=json.dumps({"number": found[0].get("number"), "lines": {}}))

    async def _update(self, target: dict[str, Any], lines: list[dict[str, Any]], header: dict[str, Any],
                      bc_lines: list[dict[str, Any]], old_map: dict[str, str]) -> dict[str, str]:
        """One all-or-nothing `$batch` (Isolation: snapshot): the header (with its ETag), then the lines —
        changed ones patched, new ones added, gone ones removed. The new line map."""
        bc = self.ctx.bc
        order_id = str(target["id"])
        lines_set = f"salesOrders({order_id})/salesOrderLines"
        operations: list[dict[str, Any]] = []

        def operation(method: str, url: str, body: dict[str, Any] | None = None, etag: str = "*") -> str:
            op_id = str(len(operations) + 1)
            headers = {"Content-Type": "application/json", **({"If-Match": etag} if method != "POST" else {})}
            operations.append({"id": op_id, "method": method, "url": url, "headers": headers,
                               **({"body": body} if body is not None else {})})
            return op_id

        changes = {k: v for k, v in header.items() if target.get(k) != v
                   and not (k == "currencyCode" and lookups.bc_currency(self.ctx, v) == lookups.bc_currency(
                       self.ctx, target.get(k)))}
        if changes:
            operation("PATCH", bc.record_url("salesOrders", order_id), changes, str(target["@odata.etag"]))
        existing = {str(line["id"]): line for line in target.get("salesOrderLines") or []}
        # Lines without a known counterpart (an order matched, not created by us) pair up by position.
        unmapped = {line.get("sequence"): line for line_id, line in existing.items() if line_id not in old_map.values()}
        line_map: dict[str, str] = {}
        created: dict[str, str] = {}  # operation id → Sales line id
        for dv_line, wanted in zip(lines, bc_lines, strict=True):
            dv_id = str(dv_line["salesorderdetailid"]).lower()
            current = existing.get(old_map.get(dv_id, "")) or unmapped.pop(wanted["sequence"], None)
            if current is not None and current.get("lineType") == wanted["lineType"]:
                delta = {k: v for k, v in wanted.items() if k != "sequence" and current.get(k) != v}
                if delta:
                    operation("PATCH", bc.record_url(lines_set, str(current["id"])), delta)
                line_map[dv_id] = str(current["id"])
            else:
                created[operation("POST", bc.collection_url(lines_set), wanted)] = dv_id
        for line_id in set(existing) - set(line_map.values()):
            operation("DELETE", bc.record_url(lines_set, line_id))
        if not operations:
            return line_map
        response = await bc.transport.request("POST", f"{bc.api_root()}/$batch", json={"requests": operations},
                                              headers={"Isolation": "snapshot"})
        answers = response.json().get("responses", [])
        failed = [a for a in answers if int(a.get("status", 0)) >= 400]
        if failed:
            first = next((a for a in failed if a.get("status") != 424), failed[0])
            error = (first.get("body") or {}).get("error", {})
            raise ApiError(int(first["status"]), str(error.get("code", "")), str(error.get("message", ""))[:500],
                           system="BC")
        for answer in answers:
            if answer.get("id") in created:
                line_map[created[answer["id"]]] = str(answer["body"]["id"])
        return line_map

    async def _canceled(self, order_id: str, coupling: Coupling | None) -> Applied:
        from consumers.sync import Applied

        if coupling is None:
            raise Skip("a canceled or deleted order that was never sent to Business Central")
        result = "skipped"
        if self.mapping.delete_policy == DeletePolicy.PROPAGATE:
            target = await self.ctx.bc.get("salesOrders", coupling.bc_id, expand="salesOrderLines")
            if target is not None:
                if is_shipped(target):
                    raise SyncFailure(f"{SHIPPED_MESSAGE} (order {target.get('number')}); it was not deleted")
                await self.ctx.bc.delete("salesOrders", coupling.bc_id, str(target.get("@odata.etag", "*")))
                result = "deleted"
        async with self.ctx.db.session() as session:
            await couplings.remove(session, coupling.id or 0)
        log.info("sales order canceled", order_id=order_id, policy=str(self.mapping.delete_policy), result=result)
        return Applied(result, "from_crm")

    async def _write_back_number(self, order: dict[str, Any], number: str) -> None:
        column = self.order_number_column
        if not column or not number:
            return
        try:
            await self.ctx.dv.update("salesorders", str(order["salesorderid"]), {column: number})
        except ApiError as exc:  # the number stays with the coupling (admin API) either way
            log.warning("could not write the BC order number back", column=column, error=str(exc)[:300])

    async def _from_bc(self, order_id: str, coupling: Coupling | None, deleted: bool,
                       order: dict[str, Any] | None) -> Applied:
        from consumers.sync import Applied

        if coupling is None:
            raise Skip("not coupled: orders made in Business Central do not flow to Dynamics 365 Sales")
        if not deleted and (order is None or "salesOrderLines" not in order):
            order = await self.ctx.bc.get("salesOrders", order_id, expand="salesOrderLines")
        if deleted or order is None:
            if await posted_invoice_of(self, order_id):
                return Applied("skipped", "to_crm", coupling.dataverse_id)  # posted: the invoice uses the coupling
            async with self.ctx.db.session() as session:
                await couplings.remove(session, coupling.id or 0)
            log.info("BC order deleted; coupling removed", order_id=order_id)
            return Applied("skipped", "to_crm")
        if not fully_shipped(order):
            return Applied("unchanged", "to_crm", coupling.dataverse_id)
        sales = await self.ctx.dv.get("salesorders", coupling.dataverse_id)
        if sales is None or sales.get("statecode") not in (0, SUBMITTED):
            return Applied("unchanged", "to_crm", coupling.dataverse_id)
        await self.ctx.dv.action("FulfillSalesOrder", {
            "OrderClose": {"@odata.type": "Microsoft.Dynamics.CRM.orderclose",
                           "salesorderid@odata.bind": f"/salesorders({coupling.dataverse_id})"},
            "Status": 100001}, bound_to="salesorders")
        return Applied("modified", "to_crm", coupling.dataverse_id, self.modified("bc", order))

    # --- Sales order → BC order ----------------------------------------------------------------------------------

    async def bc_order(self, order: dict[str, Any],
                       lines: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The BC order header and lines for a Sales order; refuses what BC must not get (SyncFailure)."""
        header: dict[str, Any] = {"customerId": await self._customer(order)}
        header["externalDocumentNumber"] = text_toward_bc(order.get("name"), 35)
        header["requestedDeliveryDate"] = date_only(order.get("requestdeliveryby"))
        header.update(await lookups.currency_to_bc(self.ctx, order.get("_transactioncurrencyid_value")))
        person = await lookups.salesperson_to_bc(self.ctx, order.get("_ownerid_value"))
        if person.get("salespersonCode"):
            header["salesperson"] = person["salespersonCode"]
        for who, prefix in (("billto", "billTo"), ("shipto", "shipTo")):
            for part, suffix, length in ADDRESS_PARTS:
                value = order.get(f"{who}_{part}")
                if value:
                    header[prefix + suffix] = text_toward_bc(value, length)
        units: dict[str, str | None] = {}
        bc_lines = [await self._line(line, index, units) for index, line in enumerate(lines, 1)]
        return header, bc_lines

    async def _customer(self, order: dict[str, Any]) -> str:
        account_id = order.get("_customerid_value")
        if not account_id:
            raise SyncFailure("the order has no customer")
        try:
            customer_id = await lookups.resolve(self.ctx, "CUSTOMER", "dataverse", str(account_id))
        except MissingDependency as exc:
            raise MissingDependency(f"the order's customer could not be synchronized: {exc}", "CUSTOMER",
                                    "dataverse", str(account_id)) from exc
        if customer_id is None:
            raise SyncFailure(f"the order's account {account_id} does not take part in CUSTOMER (filter)")
        customer = await self.ctx.bc.get("customers", customer_id)
        if customer is None:
            raise SyncFailure(f"the order's customer {customer_id} no longer exists in Business Central")
        if str(customer.get("blocked") or "").strip():
            raise SyncFailure(f"customer {customer.get('number')} ({customer.get('displayName')}) is blocked in "
                              f"Business Central (Blocked: {customer.get('blocked')}); the order was not created")
        return customer_id

    async def _line(self, line: dict[str, Any], index: int,
                    units: dict[str, str | None]) -> dict[str, Any]:
        sequence = index * 10000
        product_id = line.get("_productid_value")
        if line.get("isproductoverridden") or not product_id:
            return {"sequence": sequence, "lineType": "Comment",
                    "description": text_toward_bc(line.get("productdescription") or line.get("description"), 100)}
        out: dict[str, Any] = {"sequence": sequence, **await self._product(str(product_id)),
                               "quantity": float(line.get("quantity") or 0),
                               "discountAmount": money(line.get("manualdiscountamount"))}
        if line.get("priceperunit") is not None:
            out["unitPrice"] = money(line.get("priceperunit"))
        unit = await self._unit(line.get("_uomid_value"), units)
        if unit:
            out["unitOfMeasureCode"] = unit
        return out

    async def _product(self, product_id: str) -> dict[str, Any]:
        """The Item (or Resource) a product stands for: coupled, or coupled now by its product number."""
        ctx = self.ctx
        product = await ctx.dv.get("products", product_id) or {}
        label = f"product '{product.get('name') or product_id}' ({product.get('productnumber') or 'no number'})"
        resource_id = await lookups.coupled_id(ctx, "RESOURCE-PRODUCT", "dataverse", product_id)
        if resource_id:
            resource = await ctx.bc.get("resources", resource_id, api=CUSTOM_API)
            if resource is None or resource.get("blocked"):
                raise SyncFailure(f"{label}: its resource is missing or blocked in Business Central")
            return {"lineType": "Resource", "lineObjectNumber": resource["number"]}
        item_id = await lookups.coupled_id(ctx, "ITEM-PRODUCT", "dataverse", product_id)
        if item_id is None:
            number = str(product.get("productnumber") or "")
            item = None
            if number:
                async for row in ctx.bc.list("items", filter=f"number eq {odata_text(number)}", page_size=2):
                    item = row
            if item is None:
                raise SyncFailure(f"{label} has no item in Business Central (no item number {number or '—'}); "
                                  "the order was not created")
            if item.get("blocked"):
                raise SyncFailure(f"{label}: item {item['number']} is blocked in Business Central; the order was "
                                  "not created")
            await ctx.sync_dependency("ITEM-PRODUCT", "bc", str(item["id"]))  # couples by number
            item_id = await lookups.coupled_id(ctx, "ITEM-PRODUCT", "dataverse", product_id)
            if item_id is None:
                raise SyncFailure(f"{label} could not be coupled to item {item['number']}")
        item = await ctx.bc.get("items", item_id)
        if item is None:
            raise SyncFailure(f"{label}: its item no longer exists in Business Central; the order was not created")
        if item.get("blocked"):
            raise SyncFailure(f"{label}: item {item['number']} is blocked in Business Central; the order was not "
                              "created")
        return {"lineType": "Item", "itemId": item_id}

    async def _unit(self, uom_id: Any, units: dict[str, str | None]) -> str | None:
        """The BC unit code of a Sales unit: its unit group's coupled unit of measure (else the item's base)."""
        if not uom_id:
            return None
        key = str(uom_id)
        if key not in units:
            code = None
            uom = await self.ctx.dv.get("uoms", key)
            schedule = (uom or {}).get("_uomscheduleid_value")
            unit_id = await lookups.coupled_id(self.ctx, "UNITOFMEASURE", "dataverse", str(schedule)) if schedule \
                else None
            if unit_id:
                unit = await self.ctx.bc.get("unitsOfMeasure", unit_id)
                code = unit.get("code") if unit else None
            units[key] = code
        return units[key]


__all__ = ["OrderRule", "posted_invoice_of"]
