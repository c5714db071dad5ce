"""Dataverse stand-in: table definitions (EntityDefinitions, ManyToOneRelationships, Attributes, option sets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

try:
    from tests.sandbox.dataverse_helpers import API, Env, make_env
except ImportError:  # tests/sandbox collected as a rootless directory
    from dataverse_helpers import API, Env, make_env  # type: ignore[no-redef]

from sandbox.dataverse.schema import TABLES

DEFS = f"{API}/EntityDefinitions"
CAST = "Microsoft.Dynamics.CRM"


@pytest.fixture
async def dv() -> AsyncIterator[Env]:
    async with make_env() as env:
        yield env


async def get(dv: Env, url: str, **params: str) -> dict[str, Any]:
    response = await dv.service.get(url, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def relationships(dv: Env, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    rows = (await get(dv, f"{DEFS}(LogicalName='{table}')/ManyToOneRelationships"))["value"]
    return {(r["ReferencingAttribute"], r["ReferencedEntity"]): r for r in rows}


async def test_entity_definition(dv: Env) -> None:
    body = await get(dv, f"{DEFS}(LogicalName='salesorder')")
    assert {k: body[k] for k in ("LogicalName", "EntitySetName", "PrimaryIdAttribute", "PrimaryNameAttribute")} == {
        "LogicalName": "salesorder", "EntitySetName": "salesorders", "PrimaryIdAttribute": "salesorderid",
        "PrimaryNameAttribute": "name"}
    assert body["MetadataId"] and body["@odata.context"].endswith("$metadata#EntityDefinitions/$entity")
    close = await get(dv, f"{DEFS}(LogicalName='orderclose')", **{"$select": "EntitySetName,PrimaryIdAttribute"})
    assert set(close) == {"@odata.context", "EntitySetName", "PrimaryIdAttribute", "MetadataId"}
    assert (close["EntitySetName"], close["PrimaryIdAttribute"]) == ("ordercloses", "activityid")
    # The same definition by its MetadataId; the collection with a filter.
    assert (await get(dv, f"{DEFS}({body['MetadataId']})"))["LogicalName"] == "salesorder"
    found = await get(dv, DEFS, **{"$select": "LogicalName,EntitySetName", "$filter": "LogicalName eq 'product'"})
    assert [(r["LogicalName"], r["EntitySetName"]) for r in found["value"]] == [("product", "products")]


async def test_unknown_table_and_bad_queries(dv: Env) -> None:
    r = await dv.service.get(f"{DEFS}(LogicalName='widget')")
    assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message"}
    assert "'widget'" in r.json()["error"]["message"]
    r = await dv.service.get(f"{DEFS}(LogicalName='widget')/ManyToOneRelationships")
    assert r.status_code == 404
    for url, params in ((f"{DEFS}(LogicalName='account')", {"$select": "Nope"}),
                        (f"{DEFS}(LogicalName='account')/Attributes", {"$select": "Targets"}),
                        (f"{DEFS}(LogicalName='account')/Attributes", {"$expand": "OptionSet"}),
                        (f"{DEFS}(LogicalName='account')/ManyToOneRelationships", {"$filter": "Nope eq 'x'"}),
                        (f"{DEFS}(LogicalName='account')/ManyToOneRelationships", {"$filter": "SchemaName eq"})):
        r = await dv.service.get(url, params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == "0x80060888", (url, params)
    assert (await dv.service.get(f"{DEFS}(LogicalName='account')/Attributes/{CAST}.NopeMetadata")).status_code == 404


async def test_metadata_is_authenticated_budgeted_and_logged(dv: Env) -> None:
    r = await dv.service.get(f"{DEFS}(LogicalName='account')", headers={"Authorization": ""})
    assert r.status_code == 401
    await dv.control.post("/limits", json={"requests": 2, "window_seconds": 300})
    assert (await dv.service.get(f"{DEFS}(LogicalName='account')")).status_code == 200
    assert (await dv.service.get(f"{DEFS}(LogicalName='account')/Attributes")).status_code == 200
    r = await dv.service.get(f"{DEFS}(LogicalName='account')/ManyToOneRelationships")
    assert r.status_code == 429 and r.json()["error"]["code"] == "0x80072322"
    log = (await dv.control.get("/requests", params={"path_contains": "EntityDefinitions"})).json()["value"]
    assert [e["status"] for e in log] == [401, 200, 200, 429]


async def test_many_to_one_relationships(dv: Env) -> None:
    product = await relationships(dv, "product")
    navs = {k: r["ReferencingEntityNavigationPropertyName"] for k, r in product.items()}
    assert navs[("defaultuomscheduleid", "uomschedule")] == "defaultuomscheduleid"
    assert navs[("defaultuomid", "uom")] == "defaultuomid"
    assert navs[("pricelevelid", "pricelevel")] == "pricelevelid"
    assert navs[("transactioncurrencyid", "transactioncurrency")] == "transactioncurrencyid"
    assert navs[("createdby", "systemuser")] == "createdby" and navs[("modifiedby", "systemuser")] == "modifiedby"
    uom = product[("defaultuomid", "uom")]
    assert uom == {**uom, "SchemaName": "unit_of_measurement_products", "ReferencedAttribute": "uomid",
                   "ReferencingEntity": "product", "RelationshipType": "OneToManyRelationship",
                   "ReferencedEntityNavigationPropertyName": "unit_of_measurement_products"}
    assert uom["MetadataId"]
    contact = await relationships(dv, "contact")
    assert contact[("parentcustomerid", "account")]["ReferencingEntityNavigationPropertyName"] == \
        "parentcustomerid_account"
    assert contact[("parentcustomerid", "contact")]["ReferencingEntityNavigationPropertyName"] == \
        "parentcustomerid_contact"
    account = await relationships(dv, "account")
    owner = [r for (column, _), r in account.items() if column == "ownerid"]
    assert [(r["SchemaName"], r["ReferencedEntity"], r["ReferencedAttribute"],
             r["ReferencingEntityNavigationPropertyName"]) for r in owner] == [
        ("owner_accounts", "owner", "ownerid", "ownerid")]
    order = await relationships(dv, "salesorder")
    assert order[("customerid", "account")]["SchemaName"] == "order_customer_accounts"
    assert order[("customerid", "contact")]["ReferencingEntityNavigationPropertyName"] == "customerid_contact"
    close = await relationships(dv, "orderclose")
    assert close[("salesorderid", "salesorder")]["ReferencingEntityNavigationPropertyName"] == "salesorderid"
    assert close[("salesorderid", "salesorder")]["SchemaName"] == "SalesOrder_OrderClose"


async def test_relationships_select_and_filter(dv: Env) -> None:
    url = f"{DEFS}(LogicalName='product')/ManyToOneRelationships"
    body = await get(dv, url, **{"$select": "ReferencingAttribute,ReferencingEntityNavigationPropertyName",
                                 "$filter": "ReferencedEntity eq 'uom' or ReferencedEntity eq 'uomschedule'"})
    assert body["@odata.context"].endswith(
        "EntityDefinitions('product')/ManyToOneRelationships(ReferencingAttribute,"
        "ReferencingEntityNavigationPropertyName)")
    assert sorted(tuple(r) for r in body["value"]) == [
        ("ReferencingAttribute", "ReferencingEntityNavigationPropertyName", "MetadataId")] * 2
    assert sorted(r["ReferencingAttribute"] for r in body["value"]) == ["defaultuomid", "defaultuomscheduleid"]
    enum = "RelationshipType eq Microsoft.Dynamics.CRM.RelationshipType'OneToManyRelationship'"
    body = await get(dv, url, **{"$filter": f"{enum} and not (ReferencingAttribute ne 'pricelevelid')"})
    assert [r["ReferencedEntity"] for r in body["value"]] == ["pricelevel"]


async def test_attributes(dv: Env) -> None:
    body = await get(dv, f"{DEFS}(LogicalName='account')/Attributes",
                     **{"$select": "LogicalName,AttributeType,IsValidForCreate,IsValidForUpdate,IsValidForRead"})
    rows = {r["LogicalName"]: r for r in body["value"]}
    assert all(set(r) == {"@odata.type", "LogicalName", "AttributeType", "IsValidForCreate", "IsValidForUpdate",
                          "IsValidForRead", "MetadataId"} for r in rows.values())

    def shape(name: str) -> tuple[str, bool, bool]:
        return rows[name]["AttributeType"], rows[name]["IsValidForCreate"], rows[name]["IsValidForUpdate"]

    assert shape("name") == ("String", True, True)
    assert shape("customertypecode") == ("Picklist", True, True)
    assert shape("statecode") == ("State", False, True) and shape("statuscode") == ("Status", True, True)
    assert shape("creditlimit") == ("Money", True, True) and shape("creditlimit_base") == ("Money", False, False)
    assert shape("accountid") == ("Uniqueidentifier", True, False)
    assert shape("ownerid") == ("Owner", True, True)
    assert shape("transactioncurrencyid") == ("Lookup", True, True)
    assert shape("parentaccountid") == ("Lookup", True, True)
    assert shape("exchangerate") == ("Decimal", False, False)
    for system in ("createdon", "modifiedon", "createdby", "modifiedby", "modifiedonbehalfby", "owningbusinessunit"):
        assert shape(system)[1:] == (False, False), system
    assert rows["createdon"]["AttributeType"] == "DateTime" and rows["createdby"]["AttributeType"] == "Lookup"
    contact = {r["LogicalName"]: r for r in (await get(dv, f"{DEFS}(LogicalName='contact')/Attributes"))["value"]}
    assert contact["parentcustomerid"]["AttributeType"] == "Customer"
    assert contact["fullname"]["IsValidForCreate"] is contact["fullname"]["IsValidForUpdate"] is False
    endpoint = {r["LogicalName"]: r for r in (await get(dv, f"{DEFS}(LogicalName='serviceendpoint')/Attributes"))[
        "value"]}
    assert endpoint["authvalue"]["IsValidForRead"] is False and endpoint["authvalue"]["IsValidForCreate"] is True
    product = {r["LogicalName"]: r for r in (await get(dv, f"{DEFS}(LogicalName='product')/Attributes",
                                                       **{"$filter": "AttributeType eq 'Lookup'"}))["value"]}
    assert product["pricelevelid"]["IsValidForCreate"] is False and product["pricelevelid"]["IsValidForUpdate"]
    assert {"defaultuomid", "defaultuomscheduleid", "pricelevelid", "transactioncurrencyid"} <= set(product)


def labels(rows: list[dict[str, Any]]) -> dict[str, dict[int, str]]:
    return {r["LogicalName"]: {o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in r["OptionSet"]["Options"]}
            for r in rows}


async def test_picklist_options(dv: Env) -> None:
    url = f"{DEFS}(LogicalName='account')/Attributes/{CAST}.PicklistAttributeMetadata"
    body = await get(dv, url, **{"$select": "LogicalName", "$expand": "OptionSet($select=Options)"})
    [row] = body["value"]
    assert set(row) == {"LogicalName", "MetadataId", "OptionSet"} and set(row["OptionSet"]) == {"Options",
                                                                                                 "MetadataId"}
    option = next(o for o in row["OptionSet"]["Options"] if o["Value"] == 3)
    assert option["Label"]["UserLocalizedLabel"] == {**option["Label"]["UserLocalizedLabel"], "Label": "Customer",
                                                     "LanguageCode": 1033}
    assert option["Label"]["LocalizedLabels"][0]["Label"] == "Customer"
    product = labels((await get(dv, url.replace("'account'", "'product'"), **{"$expand": "OptionSet"}))["value"])
    assert product["producttypecode"] == {1: "Sales Inventory", 2: "Miscellaneous Charges", 3: "Services",
                                          4: "Flat Fees"}
    prices = labels((await get(dv, url.replace("'account'", "'productpricelevel'"), **{
        "$select": "LogicalName", "$expand": "OptionSet($select=Options)"}))["value"])
    assert prices["pricingmethodcode"][1] == "Currency Amount" and len(prices["pricingmethodcode"]) == 6
    assert prices["quantitysellingcode"] == {1: "No Control", 2: "Whole", 3: "Whole and Fractional"}
    # Without $expand the option set is not there (a navigation property).
    assert "OptionSet" not in (await get(dv, url, **{"$select": "LogicalName"}))["value"][0]


async def test_every_picklist_lists_options(dv: Env) -> None:
    for logical in TABLES:
        rows = (await get(dv, f"{DEFS}(LogicalName='{logical}')/Attributes/{CAST}.PicklistAttributeMetadata",
                          **{"$expand": "OptionSet"}))["value"]
        for row in rows:
            assert row["OptionSet"]["Options"], (logical, row["LogicalName"])


async def test_state_and_status_options(dv: Env) -> None:
    base = f"{DEFS}(LogicalName='salesorder')/Attributes/{CAST}"
    [state] = (await get(dv, f"{base}.StateAttributeMetadata", **{"$select": "LogicalName",
                                                                  "$expand": "OptionSet($select=Options)"}))["value"]
    assert state["LogicalName"] == "statecode"
    states = {o["Value"]: o for o in state["OptionSet"]["Options"]}
    assert states[1]["Label"]["UserLocalizedLabel"]["Label"] == "Submitted" and states[1]["DefaultStatus"] == 3
    assert states[3]["InvariantName"] == "Fulfilled"
    [status] = (await get(dv, f"{base}.StatusAttributeMetadata", **{"$expand": "OptionSet"}))["value"]
    statuses = {o["Value"]: (o["State"], o["Label"]["UserLocalizedLabel"]["Label"]) for o in
                status["OptionSet"]["Options"]}
    assert statuses[100001] == (3, "Complete") and statuses[100003] == (4, "Invoiced") and statuses[3] == (
        1, "In Progress")
    assert status["OptionSet"]["OptionSetType"] == "Status"


async def test_lookup_cast_lists_targets(dv: Env) -> None:
    rows = (await get(dv, f"{DEFS}(LogicalName='salesorder')/Attributes/{CAST}.LookupAttributeMetadata",
                      **{"$select": "LogicalName,Targets,AttributeType"}))["value"]
    found = {r["LogicalName"]: (r["AttributeType"], r["Targets"]) for r in rows}
    assert found["customerid"] == ("Customer", ["account", "contact"])
    assert found["ownerid"] == ("Owner", ["systemuser", "team"])
    assert found["pricelevelid"] == ("Lookup", ["pricelevel"])


async def test_metadata_through_the_human_route(dv: Env) -> None:
    r = await dv.human.get(f"{DEFS}(LogicalName='contact')/ManyToOneRelationships",
                           params={"$filter": "ReferencingAttribute eq 'parentcustomerid'"})
    assert r.status_code == 200 and len(r.json()["value"]) == 2
