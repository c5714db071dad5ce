"""The API's types: unknown properties, fields a tenant lacks (missing_fields), `$metadata` (CSDL) and the
custom API's exact field lists (salesPrices.status included)."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import httpx
import pytest

from tests.sandbox.conftest import COMPANY, CUSTOM, ROOT, make

CUSTOM_ROOT = ROOT.replace("/api/v2.0", "/api/bcsync/integration/v1.0")
EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
MISSING_WEBSITE = pytest.mark.parametrize("bc_config", [{"missing_fields": ("customers.website",)}], indirect=True)


async def test_unknown_property_on_write(client: httpx.AsyncClient) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum"})
    for response, entity, name in (
        (await client.post(f"{COMPANY}/items", json={"displayName": "Desk", "colour": "red"}), "item", "colour"),
        (await client.patch(f"{COMPANY}/customers({customer['id']})", json={"yourReference": "x"},
                            headers={"If-Match": "*"}), "customer", "yourReference"),
        (await client.post(f"{COMPANY}/salesOrders", json={"customerId": customer["id"], "salesOrderLines": [
            {"lineType": "Comment", "bogus": 1}]}), "salesOrderLine", "bogus"),
        (await client.post(f"{COMPANY}/customers", json={"salesOrderLines": []}), "customer", "salesOrderLines"),
        (await client.post(f"{CUSTOM}/salesPrices", json={"priceListCode": "P1"}), "salesPrice", "priceListCode"),
    ):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "BadRequest"
        assert error["message"].startswith(
            f"The property '{name}' does not exist on type 'Microsoft.NAV.{entity}'. Make sure to only use "
            "property names that are defined by the type.  CorrelationId:  ")
    assert (await make(client, "customers", {"@odata.etag": "W/\"x\"", "displayName": "T"}))["displayName"] == "T"


@MISSING_WEBSITE
async def test_missing_field(client: httpx.AsyncClient) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum"})
    assert "website" not in customer and "email" in customer
    assert "website" not in (await client.get(f"{COMPANY}/customers({customer['id']})")).json()
    assert "website" not in (await client.get(f"{COMPANY}/customers")).json()["value"][0]
    assert "website" not in (await client.get(f"/_sandbox/entities/customers/{customer['id']}")).json()
    refused = await client.post(f"{COMPANY}/customers", json={"website": "www.x.example"})
    assert refused.status_code == 400 and "'website' does not exist on type 'Microsoft.NAV.customer'" in (
        refused.json()["error"]["message"])
    for query in ("$select=website", "$filter=website eq 'x'", "$orderby=website"):
        assert (await client.get(f"{COMPANY}/customers?{query}")).status_code == 400
    metadata = ET.fromstring((await client.get(f"{ROOT}/$metadata")).content)
    assert "website" not in _properties(metadata, "customer")
    assert "website" in _properties(metadata, "contact")  # only customers.website is missing
    contact = (await client.get(f"/_sandbox/customers/{customer['id']}/contacts")).json()["company"]
    assert "website" in contact


def _entity_types(doc: ET.Element) -> dict[str, ET.Element]:
    schema = doc.find(f"{EDMX}DataServices/{EDM}Schema")
    assert schema is not None and schema.get("Namespace") == "Microsoft.NAV"
    return {e.get("Name", ""): e for e in schema.findall(f"{EDM}EntityType")}


def _properties(doc: ET.Element, entity: str) -> dict[str, ET.Element]:
    return {p.get("Name", ""): p for p in _entity_types(doc)[entity].findall(f"{EDM}Property")}


def _enum_members(doc: ET.Element, name: str) -> list[tuple[str, str]]:
    enums = {e.get("Name"): e for e in doc.iter(f"{EDM}EnumType")}
    return [(m.get("Name", ""), m.get("Value", "")) for m in enums[name].findall(f"{EDM}Member")]


@pytest.mark.parametrize("bc_config", [{}, {"enum_style": "plain"}], indirect=True)
async def test_v2_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{ROOT}/$metadata")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    doc = ET.fromstring(response.content)
    assert doc.tag == f"{EDMX}Edmx" and doc.get("Version") == "4.0"
    types = _entity_types(doc)
    assert {"customer", "contact", "salespersonPurchaser", "item", "unitOfMeasure", "currency", "salesOrder",
            "salesOrderLine", "salesInvoice", "salesInvoiceLine", "contactInformation"} <= set(types)
    assert not {"resource", "customerPriceGroup", "salesPrice"} & set(types)
    key = types["customer"].find(f"{EDM}Key/{EDM}PropertyRef")
    assert key is not None and key.get("Name") == "id"
    customer = _properties(doc, "customer")
    assert customer["id"].get("Type") == "Edm.Guid" and customer["currencyId"].get("Type") == "Edm.Guid"
    assert customer["displayName"].get("Type") == "Edm.String"
    assert customer["creditLimit"].get("Type") == "Edm.Decimal" and customer["taxLiable"].get("Type") == "Edm.Boolean"
    assert customer["lastModifiedDateTime"].get("Type") == "Edm.DateTimeOffset"
    assert customer["blocked"].get("Type") == "Microsoft.NAV.customerBlocked"
    computed = [a.get("Term") for a in customer["lastModifiedDateTime"].findall(f"{EDM}Annotation")]
    assert computed == ["Org.OData.Core.V1.Computed"] and not customer["displayName"].findall(f"{EDM}Annotation")
    assert _properties(doc, "salesInvoice")["postingDate"].get("Type") == "Edm.Date"
    assert "jobTitle" not in _properties(doc, "contact")
    # Member names are always the encoded identifiers, whatever spelling the JSON uses.
    assert _enum_members(doc, "customerBlocked") == [("_x0020_", "0"), ("Ship", "1"), ("Invoice", "2"), ("All", "3")]
    assert ("In_x0020_Review", "2") in _enum_members(doc, "invoiceEntityAggregateStatus")
    assert ("Fixed_x0020_Asset", "4") in _enum_members(doc, "invoiceLineAggLineType")
    assert ("Non_x002D_Inventory", "2") in _enum_members(doc, "itemType")
    nav = {n.get("Name"): n.get("Type") for n in types["salesOrder"].findall(f"{EDM}NavigationProperty")}
    assert nav == {"salesOrderLines": "Collection(Microsoft.NAV.salesOrderLine)"}
    info_key = types["contactInformation"].find(f"{EDM}Key/{EDM}PropertyRef")
    assert info_key is not None and info_key.get("Name") == "contactId"
    container = doc.find(f"{EDMX}DataServices/{EDM}Schema/{EDM}EntityContainer")
    assert container is not None
    sets = {s.get("Name"): s.get("EntityType") for s in container.findall(f"{EDM}EntitySet")}
    assert sets["customers"] == "Microsoft.NAV.customer" and sets["salesInvoiceLines"] == "Microsoft.NAV.salesInvoiceLine"
    assert sets["contactsInformation"] == "Microsoft.NAV.contactInformation"


async def test_metadata_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{ROOT}/$metadata", headers={"Authorization": ""})).status_code == 401
    assert (await client.post(f"{ROOT}/$metadata")).status_code == 405


CUSTOM_FIELDS = {
    "resource": ["id", "number", "displayName", "baseUnitOfMeasureCode", "unitPrice", "unitCost", "blocked",
                 "lastModifiedDateTime"],
    "customerPriceGroup": ["id", "code", "description", "currencyCode", "lastModifiedDateTime"],
    "salesPrice": ["id", "itemId", "customerPriceGroupCode", "currencyCode", "unitOfMeasureCode", "unitPrice",
                   "minimumQuantity", "status", "lastModifiedDateTime"],
}


async def test_custom_metadata_and_field_lists(client: httpx.AsyncClient) -> None:
    doc = ET.fromstring((await client.get(f"{CUSTOM_ROOT}/$metadata")).content)
    assert set(_entity_types(doc)) == {"company", *CUSTOM_FIELDS}
    for entity, fields in CUSTOM_FIELDS.items():
        assert list(_properties(doc, entity)) == fields
    assert _properties(doc, "salesPrice")["status"].get("Type") == "Microsoft.NAV.priceStatus"
    assert _enum_members(doc, "priceStatus") == [("Draft", "0"), ("Active", "1"), ("Inactive", "2")]
    await client.post("/_sandbox/seed", json={"items": 3, "resources": 1, "priceGroups": 1, "pricesPerGroup": 2})
    bodies: dict[str, dict[str, Any]] = {}
    for entity, set_name in (("resource", "resources"), ("customerPriceGroup", "customerPriceGroups"),
                             ("salesPrice", "salesPrices")):
        bodies[entity] = (await client.get(f"{CUSTOM}/{set_name}")).json()["value"][0]
        assert [k for k in bodies[entity] if k != "@odata.etag"] == CUSTOM_FIELDS[entity]
    assert bodies["salesPrice"]["status"] == "Active"  # seeded prices are active


async def test_sales_price_status(client: httpx.AsyncClient) -> None:
    price = await make(client, "salesPrices", {"customerPriceGroupCode": "RETAIL", "unitPrice": 9}, CUSTOM)
    assert price["status"] == "Active"  # default
    draft = await make(client, "salesPrices", {"unitPrice": 8, "status": "Draft"}, CUSTOM)
    patched = await client.patch(f"{CUSTOM}/salesPrices({draft['id']})", json={"status": "Inactive"},
                                 headers={"If-Match": "*"})
    assert patched.status_code == 200 and patched.json()["status"] == "Inactive"
    assert (await client.post(f"{CUSTOM}/salesPrices", json={"status": "Gone"})).status_code == 400
    active = await client.get(f"{CUSTOM}/salesPrices", params={"$filter": "status eq 'Active'"})
    assert [p["id"] for p in active.json()["value"]] == [price["id"]]
