"""Prices (To CRM): CUSTPRCGRP-PRICE, SALESPRC-PRODPRICE and the integration's default price list.

- CUSTPRCGRP-PRICE is the generic Rule (fields in `schemas/mappings.py`): a BC customer price group → a
  Dataverse price list (`pricelevel`), `code` → `name`, `description`, currency (blank = local currency),
  matched by name.
- SALESPRC-PRODPRICE (`SalesPriceRule`): a BC sales price → a price list item (`productpricelevel`) in the
  price list of its group (the group synchronized first if it is not coupled), for the product coupled to
  its item (likewise synchronized first), in the product's unit group unit named by `unitOfMeasureCode`
  (blank: the base unit), `amount` = `unitPrice`, `pricingmethodcode` 1 (Currency Amount). Matched by
  price list + product + unit. Skipped, with the reason in the log: prices for no price group, quantity
  prices (`minimumQuantity` > 1: a price list item has no minimum quantity, so it would price every
  quantity), prices whose currency is not their group's, and units the product's unit group lacks.
- The default price list ("bcsync default", local currency, created on first need): every product the
  product rules write gets one price list item there with the item's (or resource's) own `unitPrice`,
  and that list as its default price list when it has none (`keep_default_price`, called by
  `consumers/rules/products.py`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from consumers.errors import MissingDependency, RecordBusy, Skip
from consumers.rules import lookups
from consumers.rules.context import SyncContext
from consumers.rules.fields import FieldRule
from consumers.rules.values import money
from schemas.mappings import CUSTOM_API, FieldMap
from schemas.odata_filter import odata_text
from service.connectors.http import ApiError
from service.logging import get_logger
from service.store import locks

log = get_logger(__name__)

DEFAULT_PRICE_LIST = "bcsync default"
CURRENCY_AMOUNT = 1  # productpricelevel.pricingmethodcode
NO_CONTROL = 1  # productpricelevel.quantitysellingcode
_CACHE_KEY = "default_price_list"
_LOCK_KEY = "CUSTPRCGRP-PRICE:default-price-list"
LOCK_WAITS = 50  # waits of 0.1 s, then RecordBusy (retried shortly by the worker)


def bind_id(payload: dict[str, Any], name: str) -> str | None:
    """The id inside `{"<name>@odata.bind": "/set(<id>)"}`."""
    value = payload.get(f"{name}@odata.bind")
    return str(value).rsplit("(", 1)[-1].rstrip(")").lower() if value else None


class SalesPriceRule(FieldRule):
    """SALESPRC-PRODPRICE: BC sales prices → price list items."""

    async def values(self, toward: str, record: dict[str, Any], *, creating: bool = False) -> dict[str, Any]:
        if toward != "dataverse":
            return await super().values(toward, record, creating=creating)
        minimum = float(record.get("minimumQuantity") or 0)
        if minimum > 1:  # checked before any dependency is synchronized
            raise Skip(f"a sales price with a minimum quantity ({minimum:g}) has no equivalent in a price list item "
                       "(it would price every quantity); quantity prices stay in Business Central")
        if not record.get("customerPriceGroupCode"):
            raise Skip("the sales price is not for a customer price group")
        out = await super().values(toward, record, creating=creating)
        out["pricingmethodcode"] = CURRENCY_AMOUNT  # kept on every write: the amount is what counts
        return out

    async def field_value(self, field: FieldMap, toward: str, record: dict[str, Any]) -> dict[str, Any]:
        if toward == "dataverse":
            if field.transform == "lookup:CUSTPRCGRP-PRICE":
                return await self._price_list(record)
            if field.transform == "lookup:ITEM-PRODUCT":
                return {"productid@odata.bind": f"/products({await self._product(record)})"}
            if field.transform == "unit:product":
                return await self._unit(record)
        return await super().field_value(field, toward, record)

    async def _price_list(self, price: dict[str, Any]) -> dict[str, Any]:
        code = str(price.get("customerPriceGroupCode") or "")
        group = None
        async for row in self.ctx.bc.list("customerPriceGroups", api=CUSTOM_API, filter=f"code eq {odata_text(code)}",
                                          page_size=2):
            group = row
        if group is None:
            raise MissingDependency(f"customer price group {code} does not exist in Business Central",
                                    "CUSTPRCGRP-PRICE", "bc", code)
        same = lookups.bc_currency(self.ctx, price.get("currencyCode")) == lookups.bc_currency(
            self.ctx, group.get("currencyCode"))
        if not same:
            raise Skip(f"the sales price is in {price.get('currencyCode') or 'the local currency'}, its price group "
                       f"{code}'s price list in {group.get('currencyCode') or 'the local currency'}")
        list_id = await lookups.resolve(self.ctx, "CUSTPRCGRP-PRICE", "bc", str(group["id"]))
        if list_id is None:
            raise Skip(f"customer price group {code} does not take part in CUSTPRCGRP-PRICE")
        # The item carries its list's currency (Dataverse requires them to agree).
        currency = await lookups.currency_to_dataverse(self.ctx, str(group.get("currencyCode") or ""))
        return {"pricelevelid@odata.bind": f"/pricelevels({list_id})", **currency}

    async def _product(self, price: dict[str, Any]) -> str:
        item_id = str(price.get("itemId") or "")
        if not item_id or item_id.strip("0-") == "":
            raise Skip("the sales price names no item")
        product_id = await lookups.resolve(self.ctx, "ITEM-PRODUCT", "bc", item_id)
        if product_id is None:
            raise Skip(f"item {item_id} does not take part in ITEM-PRODUCT (blocked)")
        return product_id

    async def _unit(self, price: dict[str, Any]) -> dict[str, Any]:
        product_id = await self._product(price)
        product = await self.ctx.dv.get("products", product_id, select=["_defaultuomscheduleid_value",
                                                                       "_defaultuomid_value"])
        schedule_id = (product or {}).get("_defaultuomscheduleid_value")
        if not schedule_id:
            raise MissingDependency(f"product {product_id} has no unit group", "ITEM-PRODUCT", "bc",
                                    str(price.get("itemId")))
        code = str(price.get("unitOfMeasureCode") or "")
        filter_ = f"_uomscheduleid_value eq {schedule_id} and " + (
            f"name eq {odata_text(code)}" if code else "isschedulebaseuom eq true")
        unit_id = None
        async for row in self.ctx.dv.list("uoms", filter=filter_, select=["uomid"], page_size=2):
            unit_id = row["uomid"]
        if unit_id is None:
            # A price per BOX must not become the price of the base unit.
            raise Skip(f"the product's unit group has no unit {code}; the sales price is not mapped")
        return {"uomid@odata.bind": f"/uoms({unit_id})", "uomscheduleid@odata.bind": f"/uomschedules({schedule_id})"}

    async def match(self, toward: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        """An existing price list item of the same price list, product and unit."""
        if toward != "dataverse":
            return []
        payload = await self.values(toward, record)
        keys = [bind_id(payload, name) for name in ("pricelevelid", "productid", "uomid")]
        if not all(keys):
            return []
        list_id, product_id, unit_id = keys
        filter_ = f"_pricelevelid_value eq {list_id} and _productid_value eq {product_id} and _uomid_value eq {unit_id}"
        return [row async for row in self.ctx.dv.list("productpricelevels", filter=filter_, page_size=5)][:5]


# --- the default price list -------------------------------------------------------------------------------------

async def _lists_named(ctx: SyncContext, name: str) -> list[dict[str, Any]]:
    return [row async for row in ctx.dv.list("pricelevels", filter=f"name eq {odata_text(name)}",
                                             select=["pricelevelid", "createdon"],
                                             orderby="createdon asc,pricelevelid asc", page_size=10)]


async def default_price_list(ctx: SyncContext) -> str:
    """The id of the integration's default price list, created (in the local currency) on first need.
    Creation holds a lease in the store, so that two workers never create two lists."""
    if cached := ctx.cache.get(_CACHE_KEY):
        return str(cached)
    owner = uuid.uuid4().hex
    for _ in range(LOCK_WAITS):
        async with ctx.db.session() as session:
            if await locks.acquire(session, [_LOCK_KEY], owner, 60.0):
                break
        await asyncio.sleep(0.1)
    else:
        raise RecordBusy("another worker is creating the default price list")
    try:
        found = await _lists_named(ctx, DEFAULT_PRICE_LIST)
        if found:
            list_id = str(found[0]["pricelevelid"]).lower()
        else:
            currency = await lookups.currency_to_dataverse(ctx, "")
            created = await ctx.dv.create("pricelevels", {
                "name": DEFAULT_PRICE_LIST, **currency,
                "description": "Owned by bcsync: the items' own unit prices from Business Central."})
            list_id = str(created["pricelevelid"]).lower()
            log.info("default price list created", name=DEFAULT_PRICE_LIST, pricelevelid=list_id)
    finally:
        async with ctx.db.session() as session:
            await locks.release(session, [_LOCK_KEY], owner)
    ctx.cache[_CACHE_KEY] = list_id
    return list_id


async def keep_default_price(ctx: SyncContext, product: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """After a product write: its one price list item in the default list holds `price` in its default unit,
    and the product names the default list when it has no default price list. The product as it is now."""
    if "price" not in payload:  # the price field is switched off for this installation
        return product
    product_id = str(product.get("productid") or "").lower()
    if not product_id:
        return product
    if not product.get("_defaultuomid_value") or "_pricelevelid_value" not in product:
        product = await ctx.dv.get("products", product_id) or product
    unit_id = product.get("_defaultuomid_value")
    if not unit_id:
        return product
    for attempt in range(2):
        list_id = await default_price_list(ctx)
        try:
            await _write_default_item(ctx, list_id, product, str(unit_id), money(payload["price"]))
            if not product.get("_pricelevelid_value"):
                product = await ctx.dv.update("products", product_id, {
                    "pricelevelid@odata.bind": f"/pricelevels({list_id})"}) or product
            return product
        except ApiError as exc:
            if exc.status != 404 or attempt:
                raise
            ctx.cache.pop(_CACHE_KEY, None)  # the default list was deleted by someone: make a new one
    return product


async def _write_default_item(ctx: SyncContext, list_id: str, product: dict[str, Any], unit_id: str,
                              amount: float) -> None:
    product_id = str(product["productid"]).lower()
    filter_ = f"_pricelevelid_value eq {list_id} and _productid_value eq {product_id}"
    rows = [row async for row in ctx.dv.list("productpricelevels", filter=filter_, page_size=10)]
    wanted = {"amount": amount, "pricingmethodcode": CURRENCY_AMOUNT}
    if not rows:
        await ctx.dv.create("productpricelevels", {
            **wanted, "quantitysellingcode": NO_CONTROL,
            "pricelevelid@odata.bind": f"/pricelevels({list_id})", "productid@odata.bind": f"/products({product_id})",
            "uomid@odata.bind": f"/uoms({unit_id})",
            **({"uomscheduleid@odata.bind": f"/uomschedules({product['_defaultuomscheduleid_value']})"}
               if product.get("_defaultuomscheduleid_value") else {})})
        return
    row, extra = rows[0], rows[1:]
    changes: dict[str, Any] = {k: v for k, v in wanted.items() if row.get(k) != v}
    if str(row.get("_uomid_value") or "").lower() != unit_id.lower():
        changes["uomid@odata.bind"] = f"/uoms({unit_id})"
        if product.get("_defaultuomscheduleid_value"):
            changes["uomscheduleid@odata.bind"] = f"/uomschedules({product['_defaultuomscheduleid_value']})"
    if changes:
        await ctx.dv.update("productpricelevels", str(row["productpricelevelid"]), changes)
    for duplicate in extra:  # one item per product in the default list
        await ctx.dv.delete("productpricelevels", str(duplicate["productpricelevelid"]))
