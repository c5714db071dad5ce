"""Navigation property names come from the org's metadata (ManyToOneRelationships), never from us."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from service.connectors.budget import RequestBudget
from service.connectors.dataverse import DataverseClient
from service.connectors.http import ApiError
from service.connectors.navigation import NavigationNames, UnknownLookup, target_of
from tests.unit.test_connector_http import FakeTokens

ORG = "https://contoso.crm.dynamics.com/api/data/v9.2"


def relationship(column: str, target: str, navigation: str) -> dict[str, str]:
    return {"ReferencingAttribute": column, "ReferencedEntity": target,
            "ReferencingEntityNavigationPropertyName": navigation}


# Two readings of the same org: Microsoft's generated table references (product's in lower case) and a
# mixed-case spelling (as product's are written in other sources, and as customizations name theirs).
LOWER = {
    "product": [relationship("defaultuomscheduleid", "uomschedule", "defaultuomscheduleid"),
                relationship("defaultuomid", "uom", "defaultuomid"),
                relationship("pricelevelid", "pricelevel", "pricelevelid")],
    "contact": [relationship("parentcustomerid", "account", "parentcustomerid_account"),
                relationship("parentcustomerid", "contact", "parentcustomerid_contact"),
                relationship("ownerid", "owner", "ownerid"), relationship("createdby", "systemuser", "createdby")],
    "orderclose": [relationship("salesorderid", "salesorder", "salesorderid")],
}
PASCAL = {
    "product": [relationship("defaultuomscheduleid", "uomschedule", "DefaultUoMScheduleId"),
                relationship("defaultuomid", "uom", "DefaultUoMId"),
                relationship("pricelevelid", "pricelevel", "PriceLevelId")],
    "contact": [relationship("parentcustomerid", "account", "ParentCustomerId_Account"),
                relationship("parentcustomerid", "contact", "ParentCustomerId_Contact"),
                relationship("ownerid", "owner", "OwnerId")],
    "orderclose": [relationship("salesorderid", "salesorder", "SalesOrderId")],
}


def names(org: dict[str, list[dict[str, str]]], calls: list[str] | None = None) -> NavigationNames:
    async def fetch(table: str) -> list[dict[str, Any]]:
        if calls is not None:
            calls.append(table)
        return list(org[table])

    return NavigationNames(fetch)


@pytest.mark.parametrize("org", [LOWER, PASCAL], ids=["lower", "pascal"])
async def test_binds_are_renamed_to_the_orgs_navigation_properties(org: dict[str, Any]) -> None:
    navigation = names(org)
    body = await navigation.translate("product", {
        "name": "Desk", "defaultuomscheduleid@odata.bind": "/uomschedules(1)", "defaultuomid@odata.bind": "/uoms(2)"})
    expected = {r["ReferencingAttribute"]: r["ReferencingEntityNavigationPropertyName"] for r in org["product"]}
    assert body == {"name": "Desk", f"{expected['defaultuomscheduleid']}@odata.bind": "/uomschedules(1)",
                    f"{expected['defaultuomid']}@odata.bind": "/uoms(2)"}


async def test_a_multi_table_lookup_takes_the_name_of_its_target_and_owner_the_only_one() -> None:
    navigation = names(PASCAL)
    body = await navigation.translate("contact", {
        "parentcustomerid@odata.bind": "/accounts(1)", "ownerid@odata.bind": "/systemusers(2)"})
    assert body == {"ParentCustomerId_Account@odata.bind": "/accounts(1)", "OwnerId@odata.bind": "/systemusers(2)"}
    assert await navigation.name("contact", "parentcustomerid", "contact") == "ParentCustomerId_Contact"


async def test_nested_entities_of_an_action_are_translated_by_their_type() -> None:
    navigation = names(PASCAL)
    body = await navigation.translate("", {"Status": 100001, "OrderClose": {
        "@odata.type": "Microsoft.Dynamics.CRM.orderclose", "salesorderid@odata.bind": "/salesorders(9)"}})
    assert body["OrderClose"] == {"@odata.type": "Microsoft.Dynamics.CRM.orderclose",
                                  "SalesOrderId@odata.bind": "/salesorders(9)"}


async def test_metadata_is_read_once_per_table() -> None:
    calls: list[str] = []
    navigation = names(LOWER, calls)
    for _ in range(3):
        await navigation.translate("product", {"defaultuomid@odata.bind": "/uoms(1)"})
    await navigation.translate("contact", {"parentcustomerid@odata.bind": "/accounts(1)"})
    assert calls == ["product", "contact"]


async def test_an_unknown_lookup_names_what_the_org_has() -> None:
    with pytest.raises(UnknownLookup, match=r"product\.transactioncurrencyid has no navigation property"):
        await names(LOWER).translate("product", {"transactioncurrencyid@odata.bind": "/transactioncurrencies(1)"})


async def test_unreadable_metadata_falls_back_to_the_documented_names() -> None:
    async def fetch(table: str) -> list[dict[str, Any]]:
        raise ApiError(404, "0x80060888", "Resource not found for the segment 'EntityDefinitions'.")

    navigation = NavigationNames(fetch)
    assert await navigation.name("contact", "parentcustomerid", "account") == "parentcustomerid_account"
    assert await navigation.name("product", "defaultuomid", "uom") == "defaultuomid"


async def test_throttling_while_reading_metadata_is_not_a_fallback() -> None:
    async def fetch(table: str) -> list[dict[str, Any]]:
        raise ApiError(429, "0x80072322", "Number of requests exceeded the limit")

    with pytest.raises(ApiError):
        await NavigationNames(fetch).name("product", "defaultuomid", "uom")


def test_targets_of_bind_values() -> None:
    assert target_of("/accounts(1)") == "account"
    assert target_of("https://contoso.crm.dynamics.com/api/data/v9.2/uomschedules(1)") == "uomschedule"
    assert target_of(None) is None


@respx.mock
async def test_the_client_sends_the_orgs_names_and_reads_the_metadata_it_needs() -> None:
    metadata = respx.get(f"{ORG}/EntityDefinitions(LogicalName='product')/ManyToOneRelationships").mock(
        return_value=httpx.Response(200, json={"value": PASCAL["product"]}))
    create = respx.post(f"{ORG}/products").mock(return_value=httpx.Response(201, json={"productid": "p1"}))
    plain = respx.post(f"{ORG}/accounts").mock(return_value=httpx.Response(201, json={"accountid": "a1"}))
    client = DataverseClient(ORG, "https://contoso.crm.dynamics.com/.default", FakeTokens(), RequestBudget(100, 60))
    try:
        await client.create("products", {"name": "Desk", "defaultuomid@odata.bind": "/uoms(2)"})
        await client.create("accounts", {"name": "Fabrikam"})  # no lookup: no metadata read
    finally:
        await client.aclose()
    assert metadata.call_count == 1 and plain.called
    assert "ReferencingEntityNavigationPropertyName" in str(metadata.calls.last.request.url)
    assert json.loads(create.calls.last.request.content) == {"name": "Desk", "DefaultUoMId@odata.bind": "/uoms(2)"}
