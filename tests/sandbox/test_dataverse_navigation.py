"""Dataverse stand-in: navigation names are case-sensitive and spelled per reading (nav_style lower | pascal)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

try:
    from tests.sandbox.dataverse_helpers import API, Env, entity_id, make_env, nav, register_webhook
except ImportError:  # tests/sandbox collected as a rootless directory
    from dataverse_helpers import API, Env, entity_id, make_env, nav, register_webhook  # type: ignore[no-redef]

from sandbox.dataverse import identity
from sandbox.dataverse.navigation import nav_name
from sandbox.dataverse.schema import TABLES

UNDECLARED = ("An undeclared property '{}' which only has property annotations in the payload but no property "
              "value was found in the payload. In OData, only declared navigation properties and declared named "
              "streams can be represented as properties without values.")
# What each reading calls the lookups the integration binds.
NAMES = {
    "lower": {"defaultuomscheduleid": "defaultuomscheduleid", "defaultuomid": "defaultuomid",
              "pricelevelid": "pricelevelid", "transactioncurrencyid": "transactioncurrencyid",
              "parentcustomerid": "parentcustomerid_account", "ownerid": "ownerid",
              "customerid": "customerid_account", "salesorderid": "salesorderid"},
    "pascal": {"defaultuomscheduleid": "DefaultUoMScheduleId", "defaultuomid": "DefaultUoMId",
               "pricelevelid": "PriceLevelId", "transactioncurrencyid": "TransactionCurrencyId",
               "parentcustomerid": "ParentCustomerId_Account", "ownerid": "OwnerId",
               "customerid": "CustomerId_Account", "salesorderid": "SalesOrderId"},
}
OTHER = {"lower": "pascal", "pascal": "lower"}


@pytest.fixture(params=["lower", "pascal"])
async def dv(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with make_env(nav_style=request.param) as env:
        yield env


def names(dv: Env) -> dict[str, str]:
    return NAMES[dv.config.nav_style]


def product_body(navs: dict[str, str], number: str = "P1") -> dict[str, object]:
    return {"name": "Bike", "productnumber": number,
            f"{navs['defaultuomscheduleid']}@odata.bind": f"/uomschedules({identity.DEFAULT_UNIT_GROUP_ID})",
            f"{navs['defaultuomid']}@odata.bind": f"/uoms({identity.DEFAULT_UNIT_ID})"}


async def test_metadata_reports_the_readings_names(dv: Env) -> None:
    navs = names(dv)
    assert await nav(dv.service, "product", "defaultuomscheduleid") == navs["defaultuomscheduleid"]
    assert await nav(dv.service, "product", "defaultuomid") == navs["defaultuomid"]
    assert await nav(dv.service, "product", "pricelevelid") == navs["pricelevelid"]
    assert await nav(dv.service, "product", "transactioncurrencyid") == navs["transactioncurrencyid"]
    assert await nav(dv.service, "contact", "parentcustomerid", "account") == navs["parentcustomerid"]
    assert await nav(dv.service, "account", "ownerid") == navs["ownerid"]
    assert await nav(dv.service, "salesorder", "customerid", "account") == navs["customerid"]
    assert await nav(dv.service, "orderclose", "salesorderid") == navs["salesorderid"]


async def test_binds_match_case_sensitively(dv: Env) -> None:
    right, wrong = names(dv), NAMES[OTHER[dv.config.nav_style]]
    r = await dv.service.post(f"{API}/products", json=product_body(wrong))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "0x80048d19"
    assert UNDECLARED.format(wrong["defaultuomscheduleid"]) in error["message"]
    product_id = entity_id(await dv.service.post(f"{API}/products", json=product_body(right)))
    level = entity_id(await dv.service.post(f"{API}/pricelevels", json={
        "name": "Retail",
        f"{right['transactioncurrencyid']}@odata.bind": f"/transactioncurrencies({identity.BASE_CURRENCY_ID})"}))
    r = await dv.service.patch(f"{API}/products({product_id})", json={
        f"{wrong['pricelevelid']}@odata.bind": f"/pricelevels({level})"})
    assert r.status_code == 400 and UNDECLARED.format(wrong["pricelevelid"]) in r.json()["error"]["message"]
    r = await dv.service.patch(f"{API}/products({product_id})", json={
        f"{right['pricelevelid']}@odata.bind": f"/pricelevels({level})"})
    assert r.status_code == 204
    row = (await dv.service.get(f"{API}/products({product_id})?$select=_pricelevelid_value")).json()
    assert row["_pricelevelid_value"] == level


async def test_polymorphic_and_owner_binds(dv: Env) -> None:
    navs = names(dv)
    account = entity_id(await dv.service.post(f"{API}/accounts", json={
        "name": "Parent", f"{navs['ownerid']}@odata.bind": f"/systemusers({identity.SALESPERSON_ID})"}))
    contact = entity_id(await dv.service.post(f"{API}/contacts", json={
        "lastname": "Child", f"{navs['parentcustomerid']}@odata.bind": f"/accounts({account})"}))
    row = (await dv.service.get(f"{API}/contacts({contact})?$select=_parentcustomerid_value,_ownerid_value",
                                headers={"Prefer": 'odata.include-annotations="*"'})).json()
    assert row["_parentcustomerid_value"] == account
    assert row["_parentcustomerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == \
        navs["parentcustomerid"]
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == navs["ownerid"]
    wrong = NAMES[OTHER[dv.config.nav_style]]["parentcustomerid"]
    r = await dv.service.post(f"{API}/contacts", json={"lastname": "X", f"{wrong}@odata.bind": f"/accounts({account})"})
    assert r.status_code == 400 and UNDECLARED.format(wrong) in r.json()["error"]["message"]


async def test_the_human_route_follows_the_reading(dv: Env) -> None:
    right, wrong = names(dv), NAMES[OTHER[dv.config.nav_style]]
    assert (await dv.human.post(f"{API}/products", json=product_body(wrong))).status_code == 400
    entity_id(await dv.human.post(f"{API}/products", json=product_body(right)))


async def test_webhook_registration_reads_names_from_metadata(dv: Env) -> None:
    await register_webhook(dv.service, "account", "Update", images=[{"entityalias": "PostImage", "imagetype": 1}])
    account = entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    await dv.human.patch(f"{API}/accounts({account})", json={"name": "B"})
    await dv.drain()
    assert len(dv.receiver.bodies) == 1


def test_pascal_spells_every_navigation_in_mixed_case() -> None:
    for table in TABLES.values():
        for column, lookup in table.lookups.items():
            for target in lookup.targets:
                pascal = nav_name(table, column, target, "pascal")
                assert pascal.lower() == nav_name(table, column, target, "lower"), (table.logical, column)
                assert re.search("[A-Z]", pascal), (table.logical, column)
    product = TABLES["product"]
    assert [nav_name(product, c, t, "pascal") for c, t in (
        ("defaultuomscheduleid", "uomschedule"), ("defaultuomid", "uom"), ("pricelevelid", "pricelevel"),
        ("transactioncurrencyid", "transactioncurrency"))] == [
        "DefaultUoMScheduleId", "DefaultUoMId", "PriceLevelId", "TransactionCurrencyId"]
    step = TABLES["sdkmessageprocessingstep"]
    assert nav_name(step, "eventhandler", "serviceendpoint", "pascal") == "EventHandler_ServiceEndpoint"
    assert nav_name(step, "sdkmessagefilterid", "sdkmessagefilter", "pascal") == "SdkMessageFilterId"
