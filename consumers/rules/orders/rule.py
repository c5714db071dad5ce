"""SALESORDER-ORDER, the rule: the reads, lookups and writes (what BC gets is decided in document.py).

From Sales: read the order and its lines, resolve the customer, currency, salesperson, items and units, then
create BC's order (deep insert), couple a matching one, update it (one `$batch`), or cancel it. From BC: a
coupled order shipped completely makes the Sales order Fulfilled. See the package's docstring for the rules.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from consumers.errors import Filtered, MissingDependency, Skip, SyncFailure
from consumers.rules import lookups
from consumers.rules.base import Rule, parse_time
from consumers.rules.orders import document
from consumers.rules.orders.document import CANCELED, FULFILLED, SUBMITTED, OrderUpdate, is_shipped
from schemas.mappings import CUSTOM_API, DeletePolicy
from schemas.odata_filter import odata_text
from schemas.vocabulary import Applied, FieldChange, Result, Side, digest
from service.connectors.business_central import BatchRequest
from service.connectors.http import ApiError
from service.logging import get_logger
from service.store import couplings

if TYPE_CHECKING:
    from consumers.rules.context import SyncContext
    from consumers.rules.record_run import RecordRun
    from schemas.events import ChangeEvent
    from schemas.mappings import TableMapping
    from service.store.models import Coupling

log = get_logger(__name__)

SHIPPED_MESSAGE = "the order is already shipped in Business Central"
TO_BC, TO_SALES = Side.BC.toward, Side.DATAVERSE.toward  # Applied.direction of writes to each side
FULFILLED_STATUS = 100001  # salesorder statuscode "Complete" of the Fulfilled state


async def posted_invoice_of(rule: Rule, order_id: str) -> dict[str, Any] | None:
    """The posted BC invoice that came from this order (posting deletes the order)."""
    async for invoice in rule.ctx.bc.list("salesInvoices", filter=f"orderId eq {order_id}", page_size=2):
        return invoice
    return None


class OrderRule(Rule):
    def __init__(self, mapping: TableMapping, ctx: SyncContext) -> None:
        super().__init__(mapping, ctx)
        # BCSYNC_ORDER_NUMBER_COLUMN, given with the context (the rule reads no settings of its own).
        self.order_number_column: str | None = ctx.order_number_column

    # --- which events ------------------------------------------------------------------------------------------

    def handles(self, side: str, entity: str) -> bool:
        if side == Side.DATAVERSE:
            return entity in ("salesorder", "salesorderdetail")
        return entity == self.mapping.bc_entity

    async def event_record_id(self, side: str, event: ChangeEvent) -> str | None:
        if side != Side.DATAVERSE or event.entity != "salesorderdetail" or event.record_id is None:
            return event.record_id
        line = await self.ctx.dv.get("salesorderdetails", event.record_id)
        order_id = (line or {}).get("_salesorderid_value")
        if order_id is None and event.snapshot:  # a deleted line: its image names the order
            reference = event.snapshot.get("salesorderid")
            order_id = (reference.get("id") or reference.get("Id")) if isinstance(reference, dict) else reference
        return str(order_id).lower() if order_id else None

    def catch_up_sides(self) -> list[str]:
        """Orders flow from Sales, but BC's shipments come back: a lost shipment notice is caught up too."""
        return [Side.DATAVERSE, Side.BC]

    # --- applying ----------------------------------------------------------------------------------------------

    async def apply(self, run: RecordRun) -> Applied:
        """The order as the run finds it (`run.record`: the source's; `run.target`: the other side's, for the
        record history) is applied from Sales to BC, or BC's shipment back to Sales."""
        if run.side == Side.BC:
            return await self._from_bc(run)
        return await self._from_sales(run)

    async def _from_sales(self, run: RecordRun) -> Applied:
        order_id, coupling, order = run.record_id, run.coupling, run.record
        if order is None and not run.deleted:
            order = run.record = await self.ctx.dv.get("salesorders", order_id)
        if order is None or order.get("statecode") == CANCELED:
            return await self._canceled(order_id, coupling)
        if order.get("statecode") != SUBMITTED:
            raise Skip("the order is not Submitted")
        if not self.included(Side.DATAVERSE, order):
            raise Filtered("excluded by the mapping's filter")
        lines = document.sorted_lines([row async for row in self.ctx.dv.list(
            "salesorderdetails", filter=f"_salesorderid_value eq {order_id}")])
        header, bc_lines = await self.bc_order(order, lines)
        source_hash = digest({"header": header, "lines": bc_lines})
        modified = self.modified(Side.DATAVERSE, order)
        if coupling is None:
            coupling = await self._match(order_id, header)
            if coupling is None:
                return await self._create(run, order, lines, header, bc_lines, source_hash)
            result = Result.COUPLED
        else:
            result = Result.MODIFIED
            if coupling.dataverse_hash == source_hash:
                return Applied(Result.UNCHANGED, TO_BC, coupling.bc_id,
                               reason="the order is as it was last sent to Business Central")
        target = run.target = await self.ctx.bc.get("salesOrders", coupling.bc_id, expand="salesOrderLines")
        if target is None:
            if await posted_invoice_of(self, coupling.bc_id):
                raise SyncFailure(f"{SHIPPED_MESSAGE} and invoiced; the change was not applied")
            async with self.ctx.db.session() as session:
                await couplings.remove(session, coupling.id or 0)
            raise Skip("the coupled BC order no longer exists; the coupling was removed")
        if is_shipped(target):
            raise SyncFailure(f"{SHIPPED_MESSAGE} (order {target.get('number')}); the change made in Dynamics 365 "
                              "Sales was not applied")
        update = document.plan_update(target, header, lines, bc_lines, couplings.info(coupling).get("lines", {}),
                                      self.ctx.local_currency)
        line_map = await self._update(target, update)
        await self._couple(order_id, target, source_hash, line_map)
        number = target.get("number")
        changes = [FieldChange(Side.BC, key, target.get(key), value) for key, value in update.header.items()]
        summary = update.lines_summary()
        if summary:
            changes.append(FieldChange(Side.BC, "lines", f"{len(target.get('salesOrderLines') or [])} lines",
                                       f"{len(bc_lines)} lines ({summary})"))
        if result == Result.COUPLED:
            reason = (f"matched to Business Central order {number} (same customer and external document number)"
                      + ("" if update else "; it already held the order"))
        else:
            reason = (f"Business Central order {number} updated" if update
                      else f"changed, but Business Central order {number} already held it")
        return Applied(result, TO_BC, coupling.bc_id, modified, coupling if result == Result.COUPLED else None,
                       reason=reason, changes=changes)

    async def _create(self, run: RecordRun, order: dict[str, Any], lines: list[dict[str, Any]], header: dict[str, Any],
                      bc_lines: list[dict[str, Any]], source_hash: str) -> Applied:
        order_id = str(order["salesorderid"]).lower()
        created = await self.ctx.bc.create("salesOrders", {**header, "salesOrderLines": bc_lines})  # one request
        addresses = {k: v for k, v in header.items() if k.startswith(("billTo", "shipTo")) and created.get(k) != v}
        if addresses:  # BC fills the addresses from the customer when it is set; ours come after
            created = await self.ctx.bc.update("salesOrders", created["id"], addresses, str(created["@odata.etag"]))
        full = run.target = await self.ctx.bc.get("salesOrders", created["id"], expand="salesOrderLines") or created
        by_sequence = {line.get("sequence"): line["id"] for line in full.get("salesOrderLines") or []}
        line_map = {str(dv["salesorderdetailid"]).lower(): str(by_sequence[bc["sequence"]])
                    for dv, bc in zip(lines, bc_lines, strict=True) if bc["sequence"] in by_sequence}
        coupling = await self._couple(order_id, full, source_hash, line_map)
        number = str(full.get("number") or "")
        changes = [FieldChange(Side.BC, key, None, value) for key, value in header.items()]
        changes.append(FieldChange(Side.BC, "lines", None, f"{len(bc_lines)} lines"))
        if await self._write_back_number(order, number):
            changes.append(FieldChange(Side.DATAVERSE, str(self.order_number_column), order.get(
                str(self.order_number_column)), number))
        log.info("sales order created in Business Central", order=order.get("ordernumber"), number=full.get("number"))
        return Applied(Result.INSERTED, TO_BC, coupling.bc_id, self.modified(Side.DATAVERSE, order), coupling,
                       reason=f"created as Business Central order {number} with {len(bc_lines)} lines",
                       changes=changes)

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
                if await couplings.find(session, self.name, Side.BC, str(candidate["id"])) is None:
                    found.append(candidate)
        if len(found) > 1:
            raise SyncFailure(f"{len(found)} Business Central orders match this order; couple it by hand")
        if not found:
            return None
        async with self.ctx.db.session() as session:
            return await couplings.save(session, self.name, str(found[0]["id"]), order_id,
                                        info=json.dumps({"number": found[0].get("number"), "lines": {}}))

    async def _update(self, target: dict[str, Any], update: OrderUpdate) -> dict[str, str]:
        """One all-or-nothing `$batch` (Isolation: snapshot): the header (with its ETag), then the lines —
        changed ones patched, new ones added, gone ones removed. The new line map (Sales line → BC line)."""
        bc = self.ctx.bc
        order_id = str(target["id"])
        lines_set = f"salesOrders({order_id})/salesOrderLines"
        requests: list[BatchRequest] = []
        if update.header:
            requests.append(BatchRequest("1", "PATCH", bc.record_url("salesOrders", order_id), update.header,
                                         if_match=str(target["@odata.etag"])))
        added: dict[str, str] = {}  # operation id → Sales line id
        for step in update.steps:
            op_id = str(len(requests) + 1)
            if step.kind == "patch":
                requests.append(BatchRequest(op_id, "PATCH", bc.record_url(lines_set, str(step.line_id)), step.body,
                                             if_match="*"))
            elif step.kind == "add":
                requests.append(BatchRequest(op_id, "POST", bc.collection_url(lines_set), step.body))
                added[op_id] = str(step.sales_line_id)
            else:
                requests.append(BatchRequest(op_id, "DELETE", bc.record_url(lines_set, str(step.line_id)),
                                             if_match="*"))
        line_map = dict(update.kept)
        for answer in await bc.batch(requests):  # BatchFailed (an ApiError) when any operation failed
            if answer.id in added:
                line_map[added[answer.id]] = str(answer.body["id"])
        return line_map

    async def _canceled(self, order_id: str, coupling: Coupling | None) -> Applied:
        if coupling is None:
            raise Skip("a canceled or deleted order that was never sent to Business Central")
        result = Result.SKIPPED
        policy = self.mapping.delete_policy
        if policy == DeletePolicy.PROPAGATE:
            target = await self.ctx.bc.get("salesOrders", coupling.bc_id, expand="salesOrderLines")
            if target is not None:
                if is_shipped(target):
                    raise SyncFailure(f"{SHIPPED_MESSAGE} (order {target.get('number')}); it was not deleted")
                await self.ctx.bc.delete("salesOrders", coupling.bc_id, str(target.get("@odata.etag", "*")))
                result = Result.DELETED
        async with self.ctx.db.session() as session:
            await couplings.remove(session, coupling.id or 0)
        log.info("sales order canceled", order_id=order_id, policy=str(policy), result=str(result))
        reason = ("canceled or deleted in Dynamics 365 Sales: the Business Central order was deleted"
                  if result == Result.DELETED else
                  f"canceled or deleted in Dynamics 365 Sales: the coupling was removed (delete policy {policy})")
        return Applied(result, TO_BC, reason=reason)

    async def _write_back_number(self, order: dict[str, Any], number: str) -> bool:
        """The BC order number into the Sales column named by BCSYNC_ORDER_NUMBER_COLUMN; whether it was."""
        column = self.order_number_column
        if not column or not number:
            return False
        try:
            await self.ctx.dv.update("salesorders", str(order["salesorderid"]), {column: number})
        except ApiError as exc:  # the number stays with the coupling (admin API) either way
            log.warning("could not write the BC order number back", column=column, error=str(exc)[:300])
            return False
        return True

    async def _from_bc(self, run: RecordRun) -> Applied:
        order_id, coupling, deleted, order = run.record_id, run.coupling, run.deleted, run.record
        if coupling is None:
            raise Skip("not coupled: orders made in Business Central do not flow to Dynamics 365 Sales")
        if not deleted and (order is None or "salesOrderLines" not in order):
            order = run.record = await self.ctx.bc.get("salesOrders", order_id, expand="salesOrderLines")
        if deleted or order is None:
            if await posted_invoice_of(self, order_id):  # posted: the invoice uses the coupling
                return Applied(Result.SKIPPED, TO_SALES, coupling.dataverse_id,
                               reason="posted in Business Central: the coupling stays for its invoice")
            async with self.ctx.db.session() as session:
                await couplings.remove(session, coupling.id or 0)
            log.info("BC order deleted; coupling removed", order_id=order_id)
            return Applied(Result.SKIPPED, TO_SALES,
                           reason="deleted in Business Central (not posted): the coupling was removed")
        if not document.fully_shipped(order):
            return Applied(Result.UNCHANGED, TO_SALES, coupling.dataverse_id,
                           reason="not shipped completely in Business Central yet")
        sales = run.target = await self.ctx.dv.get("salesorders", coupling.dataverse_id)
        if sales is None or sales.get("statecode") not in (0, SUBMITTED):
            return Applied(Result.UNCHANGED, TO_SALES, coupling.dataverse_id,
                           reason="shipped; the Sales order is no longer open or submitted")
        await self.ctx.dv.action("FulfillSalesOrder", {
            "OrderClose": {"@odata.type": "Microsoft.Dynamics.CRM.orderclose",
                           "salesorderid@odata.bind": f"/salesorders({coupling.dataverse_id})"},
            "Status": FULFILLED_STATUS}, bound_to="salesorders")
        return Applied(Result.MODIFIED, TO_SALES, coupling.dataverse_id, self.modified(Side.BC, order),
                       reason=f"Business Central order {order.get('number')} shipped completely: the Sales order "
                              "is Fulfilled",
                       changes=[FieldChange(Side.DATAVERSE, "statecode", sales.get("statecode"), FULFILLED),
                                FieldChange(Side.DATAVERSE, "statuscode", sales.get("statuscode"),
                                            FULFILLED_STATUS)])

    # --- Sales order → BC order: the references, resolved (the document itself: document.py) ------------------

    async def bc_order(self, order: dict[str, Any],
                       lines: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The BC order header and lines for a Sales order; refuses what BC must not get (SyncFailure)."""
        customer_id = await self._customer(order)
        currency = await lookups.currency_to_bc(self.ctx, order.get("_transactioncurrencyid_value"))
        person = await lookups.salesperson_to_bc(self.ctx, order.get("_ownerid_value"))
        units: dict[str, str | None] = {}
        bc_lines = []
        for index, line in enumerate(lines, 1):
            if document.is_write_in(line):
                bc_lines.append(document.line(line, index))
                continue
            product = await self._product(str(line["_productid_value"]))
            bc_lines.append(document.line(line, index, product, await self._unit(line.get("_uomid_value"), units)))
        return document.header(order, customer_id, currency, person.get("salespersonCode")), bc_lines

    async def _customer(self, order: dict[str, Any]) -> str:
        account_id = order.get("_customerid_value")
        if not account_id:
            raise SyncFailure("the order has no customer")
        try:
            customer_id = await lookups.resolve(self.ctx, "CUSTOMER", Side.DATAVERSE, str(account_id))
        except MissingDependency as exc:
            raise MissingDependency(f"the order's customer could not be synchronized: {exc}", "CUSTOMER",
                                    Side.DATAVERSE, str(account_id)) from exc
        if customer_id is None:
            raise SyncFailure(f"the order's account {account_id} does not take part in CUSTOMER (filter)")
        customer = await self.ctx.bc.get("customers", customer_id)
        if customer is None:
            raise SyncFailure(f"the order's customer {customer_id} no longer exists in Business Central")
        if str(customer.get("blocked") or "").strip():
            raise SyncFailure(f"customer {customer.get('number')} ({customer.get('displayName')}) is blocked in "
                              f"Business Central (Blocked: {customer.get('blocked')}); the order was not created")
        return customer_id

    async def _product(self, product_id: str) -> dict[str, Any]:
        """The Item (or Resource) a product stands for: coupled, or coupled now by its product number."""
        ctx = self.ctx
        product = await ctx.dv.get("products", product_id) or {}
        label = f"product '{product.get('name') or product_id}' ({product.get('productnumber') or 'no number'})"
        resource_id = await lookups.coupled_id(ctx, "RESOURCE-PRODUCT", Side.DATAVERSE, product_id)
        if resource_id:
            resource = await ctx.bc.get("resources", resource_id, api=CUSTOM_API)
            if resource is None or resource.get("blocked"):
                raise SyncFailure(f"{label}: its resource is missing or blocked in Business Central")
            return {"lineType": "Resource", "lineObjectNumber": resource["number"]}
        item_id = await lookups.coupled_id(ctx, "ITEM-PRODUCT", Side.DATAVERSE, product_id)
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
            await ctx.sync_dependency("ITEM-PRODUCT", Side.BC, str(item["id"]))  # couples by number
            item_id = await lookups.coupled_id(ctx, "ITEM-PRODUCT", Side.DATAVERSE, product_id)
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
            unit_id = await lookups.coupled_id(self.ctx, "UNITOFMEASURE", Side.DATAVERSE, str(schedule)) \
                if schedule else None
            if unit_id:
                unit = await self.ctx.bc.get("unitsOfMeasure", unit_id)
                code = unit.get("code") if unit else None
            units[key] = code
        return units[key]
