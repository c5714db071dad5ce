"""CUSTPRCGRP-PRICE, SALESPRC-PRODPRICE and the default price list through the engine, against the sandbox."""

import asyncio
import dataclasses
from typing import Any

import pytest

from consumers.errors import Skip
from consumers.rules.prices import DEFAULT_PRICE_LIST, default_price_list
from service.store import couplings
from tests.integration.sync_world import World

BASE_CURRENCY_CODE = "USD"


async def coupled(w: World, mapping: str, bc_id: str) -> str | None:
    async with w.db.session() as session:
        coupling = await couplings.find(session, mapping, "bc", bc_id)
    return coupling.dataverse_id if coupling else None


async def item(w: World, name: str, price: float, unit: str = "PCS") -> dict[str, Any]:
    if not await w.human.bc_find("unitsOfMeasure", f"code eq '{unit}'"):
        await w.human.bc_create("unitsOfMeasure", {"code": unit, "displayName": unit.title()})
    return await w.human.bc_create("items", {"displayName": name, "type": "Inventory", "unitPrice": price,
                                             "baseUnitOfMeasureCode": unit})


async def sales_price(w: World, item_id: str, group: str, amount: float, **more: Any) -> dict[str, Any]:
    return await w.human.bc_create("salesPrices", {"itemId": item_id, "customerPriceGroupCode": group,
                                                   "unitPrice": amount, **more})


async def list_items(w: World, list_id: str) -> list[dict[str, Any]]:
    return await w.human.dv_find("productpricelevels", f"_pricelevelid_value eq {list_id}")


async def base_currency_id(w: World) -> str:
    rows = await w.human.dv_find("transactioncurrencies", f"isocurrencycode eq '{BASE_CURRENCY_CODE}'")
    return str(rows[0]["transactioncurrencyid"])


async def test_a_price_group_with_two_prices_becomes_a_price_list_with_two_items(world: World) -> None:
    helmet, lamp = await item(world, "Helmet", 50), await item(world, "Lamp", 20)
    for record in (helmet, lamp):
        await world.bc_event("ITEM-PRODUCT", "items", record["id"], "created")
    group = await world.human.bc_create("customerPriceGroups", {"code": "RETAIL", "description": "Retail prices"})
    await world.bc_event("CUSTPRCGRP-PRICE", "customerPriceGroups", group["id"], "created")
    list_id = await coupled(world, "CUSTPRCGRP-PRICE", group["id"])
    assert list_id is not None
    price_list = await world.human.dv_get("pricelevels", list_id)
    assert (price_list["name"], price_list["description"]) == ("RETAIL", "Retail prices")
    assert price_list["_transactioncurrencyid_value"] == await base_currency_id(world)  # blank = local currency

    first = await sales_price(world, helmet["id"], "RETAIL", 45.5, unitOfMeasureCode="PCS", minimumQuantity=1)
    second = await sales_price(world, lamp["id"], "RETAIL", 18)  # no unit: the base unit
    for price in (first, second):
        await world.bc_event("SALESPRC-PRODPRICE", "salesPrices", price["id"], "created")
    rows = {row["_productid_value"]: row for row in await list_items(world, list_id)}
    assert len(rows) == 2
    for record, amount in ((helmet, 45.5), (lamp, 18)):
        product = await world.human.dv_get("products", str(await coupled(world, "ITEM-PRODUCT", record["id"])))
        row = rows[product["productid"]]
        assert row["amount"] == amount and row["_uomid_value"] == product["_defaultuomid_value"]
        assert (row["pricingmethodcode"], row["quantitysellingcode"]) == (1, 1)
        assert row["_transactioncurrencyid_value"] == price_list["_transactioncurrencyid_value"]
    assert await coupled(world, "SALESPRC-PRODPRICE", first["id"]) is not None


async def test_a_price_whose_group_and_item_are_not_coupled_brings_them_first(world: World) -> None:
    drill = await item(world, "Drill", 120)
    group = await world.human.bc_create("customerPriceGroups", {"code": "WHOLESALE"})
    price = await sales_price(world, drill["id"], "WHOLESALE", 99)
    await world.bc_event("SALESPRC-PRODPRICE", "salesPrices", price["id"], "created")
    list_id = await coupled(world, "CUSTPRCGRP-PRICE", group["id"])
    product_id = await coupled(world, "ITEM-PRODUCT", drill["id"])
    assert list_id is not None and product_id is not None
    product = await world.human.dv_get("products", product_id)
    assert (product["statecode"], product["price"]) == (0, 120)  # the product went through its own rule
    [row] = await list_items(world, list_id)
    assert (row["_productid_value"], row["amount"]) == (product_id, 99)
    assert await coupled(world, "SALESPRC-PRODPRICE", price["id"]) == row["productpricelevelid"]


async def test_a_changed_price_updates_the_amount_and_a_deleted_one_removes_the_coupling(world: World) -> None:
    saw = await item(world, "Saw", 30)
    await world.human.bc_create("customerPriceGroups", {"code": "VIP"})
    price = await sales_price(world, saw["id"], "VIP", 25)
    await world.bc_event("SALESPRC-PRODPRICE", "salesPrices", price["id"], "created")
    row_id = await coupled(world, "SALESPRC-PRODPRICE", price["id"])
    assert row_id is not None

    await world.human.bc_update("salesPrices", price["id"], {"unitPrice": 22.75})
    await world.bc_event("SALESPRC-PRODPRICE", "salesPrices", price["id"])
    assert (await world.human.dv_get("productpricelevels", row_id))["amount"] == 22.75
    rule = world.engine.rules["SALESPRC-PRODPRICE"]
    assert (await world.engine.sync_record(rule, "bc", price["id"])).result == "unchanged"

    await world.human.bc_delete("salesPrices", price["id"])
    await world.bc_event("SALESPRC-PRODPRICE", "salesPrices", price["id"], "deleted")
    assert await coupled(world, "SALESPRC-PRODPRICE", price["id"]) is None
    assert await world.human.dv_get("productpricelevels", row_id) is not None  # remove-coupling: Sales keeps it


async def test_an_existing_price_list_and_item_are_matched_not_duplicated(world: World) -> None:
    hammer = await item(world, "Hammer", 15)
    await world.bc_event("ITEM-PRODUCT", "items", hammer["id"], "created")
    product = await world.human.dv_get("products", str(await coupled(world, "ITEM-PRODUCT", hammer["id"])))
    existing = await world.human.dv_create("pricelevels", {
        "name": "PARTNER", "transactioncurrencyid@odata.bind": f"/transactioncurrencies({await base_currency_id(world)})"})
    by_hand = await world.human.dv_create("productpricelevels", {
        "pricelevelid@odata.bind": f"/pricelevels({existing['pricelevelid']})",
        "productid@odata.bind": f"/products({product['productid']})",
        "uomid@odata.bind": f"/uoms({product['_defaultuomid_value']})", "amount": 1, "pricingmethodcode": 1})
    group = await world.human.bc_create("customerPriceGroups", {"code": "PARTNER"})
    price = await sales_price(world, hammer["id"], "PARTNER", 12)
    await world.bc_event("SALESPRC-PRODPRICE", "salesPrices", price["id"], "created")
    assert await coupled(world, "CUSTPRCGRP-PRICE", group["id"]) == existing["pricelevelid"]
    assert await coupled(world, "SALESPRC-PRODPRICE", price["id"]) == by_hand["productpricelevelid"]
    [row] = await list_items(world, existing["pricelevelid"])
    assert row["amount"] == 12
    assert len(await world.human.dv_find("pricelevels", "name eq 'PARTNER'")) == 1


async def test_a_group_in_a_foreign_currency_and_prices_that_have_no_price_list_item(world: World) -> None:
    await world.human.bc_create("currencies", {"code": "EUR", "displayName": "Euro", "symbol": "€"})
    cable = await item(world, "Cable", 10)
    group = await world.human.bc_create("customerPriceGroups", {"code": "EXPORT", "currencyCode": "EUR"})
    price = await sales_price(world, cable["id"], "EXPORT", 9, currencyCode="EUR")
    await world.bc_event("SALESPRC-PRODPRICE", "salesPrices", price["id"], "created")
    list_id = str(await coupled(world, "CUSTPRCGRP-PRICE", group["id"]))
    euro = await world.human.dv_find("transactioncurrencies", "isocurrencycode eq 'EUR'")
    assert (await world.human.dv_get("pricelevels", list_id))["_transactioncurrencyid_value"] == \
        euro[0]["transactioncurrencyid"]
    [row] = await list_items(world, list_id)
    assert row["amount"] == 9 and row["_transactioncurrencyid_value"] == euro[0]["transactioncurrencyid"]

    rule = world.engine.rules["SALESPRC-PRODPRICE"]
    await world.human.bc_create("unitsOfMeasure", {"code": "BOX", "displayName": "Box"})
    skipped = [
        (await sales_price(world, cable["id"], "EXPORT", 8, currencyCode="EUR", minimumQuantity=10),
         "minimum quantity"),
        (await sales_price(world, cable["id"], "EXPORT", 7), "its price group EXPORT's price list in EUR"),
        (await sales_price(world, cable["id"], "EXPORT", 80, currencyCode="EUR", unitOfMeasureCode="BOX"),
         "has no unit BOX"),  # the product's unit group is PCS
        (await sales_price(world, cable["id"], "", 5), "not for a customer price group"),
    ]
    for record, reason in skipped:
        with pytest.raises(Skip, match=reason):
            await rule.values("dataverse", record)
        assert (await world.engine.sync_record(rule, "bc", record["id"])).result == "skipped"
        assert await coupled(world, "SALESPRC-PRODPRICE", record["id"]) is None
    assert len(await list_items(world, list_id)) == 1


async def test_the_default_price_list_holds_each_items_own_unit_price(world: World) -> None:
    helmet, lamp = await item(world, "Helmet", 50), await item(world, "Lamp", 20, unit="BOX")
    for record in (helmet, lamp):
        await world.bc_event("ITEM-PRODUCT", "items", record["id"], "created")
    [default] = await world.human.dv_find("pricelevels", f"name eq '{DEFAULT_PRICE_LIST}'")
    assert default["_transactioncurrencyid_value"] == await base_currency_id(world)
    rows = {row["_productid_value"]: row for row in await list_items(world, default["pricelevelid"])}
    assert len(rows) == 2
    for record, amount in ((helmet, 50), (lamp, 20)):
        product = await world.human.dv_get("products", str(await coupled(world, "ITEM-PRODUCT", record["id"])))
        row = rows[product["productid"]]
        assert row["amount"] == amount and row["_uomid_value"] == product["_defaultuomid_value"]
        assert row["pricingmethodcode"] == 1
        assert product["_pricelevelid_value"] == default["pricelevelid"]  # the product's default price list

    await world.human.bc_update("items", helmet["id"], {"unitPrice": 55})
    await world.bc_event("ITEM-PRODUCT", "items", helmet["id"])
    product_id = str(await coupled(world, "ITEM-PRODUCT", helmet["id"]))
    [row] = await world.human.dv_find(
        "productpricelevels", f"_pricelevelid_value eq {default['pricelevelid']} and _productid_value eq {product_id}")
    assert row["amount"] == 55
    assert len(await world.human.dv_find("pricelevels", f"name eq '{DEFAULT_PRICE_LIST}'")) == 1


async def test_two_workers_needing_the_default_price_list_at_once_create_one(world: World) -> None:
    contexts = [dataclasses.replace(world.ctx, cache={}) for _ in range(3)]  # three processes' caches
    ids = await asyncio.gather(*(default_price_list(ctx) for ctx in contexts))
    assert len(set(ids)) == 1
    assert len(await world.human.dv_find("pricelevels", f"name eq '{DEFAULT_PRICE_LIST}'")) == 1
