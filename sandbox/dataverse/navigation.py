"""Single-valued navigation properties (the `<nav>@odata.bind` names) and the relationships behind them.

"Web API Navigation Properties" (Learn): the name "is case sensitive", and "in most cases the <name> found
in the lookup property will match the name of the navigation property, except in the case of multi-table
lookups". Which spelling an org uses is a reading (`nav_style`):
- "lower": Microsoft's generated table references (product.md: defaultuomscheduleid, defaultuomid,
  pricelevelid, transactioncurrencyid; account.md: ownerid; contact: parentcustomerid_account).
- "pascal": every navigation name spelled like its column's SchemaName (DefaultUoMId, OwnerId,
  ParentCustomerId_Account, EventHandler_ServiceEndpoint): orgs customize, so a client must read the names
  from ManyToOneRelationships (ReferencingEntityNavigationPropertyName) instead of hard-coding them.
Metadata, `associatednavigationproperty` annotations and bind matching all use the same reading.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sandbox.dataverse.schema import TABLES, Table
from sandbox.dataverse.values import metadata_id

LOWER, PASCAL = "lower", "pascal"

# SchemaName spelling of every lookup column the stand-in declares (the tables' references list columns
# by SchemaName: DefaultUoMScheduleId, OwnerId, EventHandler, ...).
SCHEMA_NAMES = {
    "ownerid": "OwnerId", "owningbusinessunit": "OwningBusinessUnit", "createdby": "CreatedBy",
    "modifiedby": "ModifiedBy", "modifiedonbehalfby": "ModifiedOnBehalfBy",
    "transactioncurrencyid": "TransactionCurrencyId", "customerid": "CustomerId",
    "parentaccountid": "ParentAccountId", "primarycontactid": "PrimaryContactId",
    "parentcustomerid": "ParentCustomerId", "businessunitid": "BusinessUnitId", "uomscheduleid": "UoMScheduleId",
    "baseuom": "BaseUoM", "defaultuomscheduleid": "DefaultUoMScheduleId", "defaultuomid": "DefaultUoMId",
    "pricelevelid": "PriceLevelId", "productid": "ProductId", "uomid": "UoMId", "salesorderid": "SalesOrderId",
    "invoiceid": "InvoiceId", "sdkmessageid": "SdkMessageId", "sdkmessagefilterid": "SdkMessageFilterId",
    "eventhandler": "EventHandler", "sdkmessageprocessingstepid": "SdkMessageProcessingStepId",
}
TARGET_NAMES = {"account": "Account", "contact": "Contact", "serviceendpoint": "ServiceEndpoint",
                "plugintype": "PluginType"}

# Relationship SchemaNames from the generated references (product.md, productpricelevel.md, salesorder.md,
# account.md: owner_accounts); the others are the stand-in's own `<target>_<table>_<column>`.
RELATIONSHIP_NAMES: dict[tuple[str, ...], str] = {
    ("product", "defaultuomscheduleid"): "unit_of_measurement_schedule_products",
    ("product", "defaultuomid"): "unit_of_measurement_products",
    ("product", "pricelevelid"): "price_level_products",
    ("product", "transactioncurrencyid"): "transactioncurrency_product",
    ("productpricelevel", "pricelevelid"): "price_level_product_price_levels",
    ("productpricelevel", "productid"): "product_price_levels",
    ("productpricelevel", "uomid"): "unit_of_measurement_product_price_levels",
    ("productpricelevel", "uomscheduleid"): "unit_of_measure_schedule_product_price_level",
    ("productpricelevel", "transactioncurrencyid"): "transactioncurrency_productpricelevel",
    ("salesorder", "customerid", "account"): "order_customer_accounts",
    ("salesorder", "customerid", "contact"): "order_customer_contacts",
    ("salesorder", "pricelevelid"): "price_level_orders",
    ("salesorderdetail", "salesorderid"): "order_details",
    ("invoice", "salesorderid"): "order_invoices",
    ("orderclose", "salesorderid"): "SalesOrder_OrderClose",
    ("contact", "parentcustomerid", "account"): "contact_customer_accounts",
    ("contact", "parentcustomerid", "contact"): "contact_customer_contacts",
}


def nav_name(table: Table, column: str, target: str, style: str) -> str:
    """The navigation property of lookup `column` for `target` in the given reading."""
    lower = table.lookups[column].navs[target]
    if style != PASCAL:
        return lower
    pascal = SCHEMA_NAMES[column]
    return pascal if lower == column else f"{pascal}_{TARGET_NAMES[target]}"


@cache
def _index(logical: str, style: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """nav name → (lookup column, the targets it binds): ownerid binds systemuser or team."""
    table = TABLES[logical]
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for column, lookup in table.lookups.items():
        for target in lookup.targets:
            name = nav_name(table, column, target, style)
            _, bound = out.get(name, (column, ()))
            out[name] = (column, (*bound, target))
    return out


def find(table: Table, nav: str, style: str) -> tuple[str, tuple[str, ...]] | None:
    """(lookup column, targets) for a navigation name, matched case-sensitively as Dataverse does."""
    return _index(table.logical, style).get(nav)


def _relationship(table: Table, column: str, target: str, style: str) -> dict[str, Any]:
    owner = column == "ownerid"
    referenced = "owner" if owner else target
    name = (f"owner_{table.entity_set}" if owner
            else RELATIONSHIP_NAMES.get((table.logical, column, target))
            or RELATIONSHIP_NAMES.get((table.logical, column)) or f"{target}_{table.logical}_{column}")
    target_table = TABLES.get(target)
    return {
        "SchemaName": name, "ReferencedEntity": referenced,
        "ReferencedAttribute": "ownerid" if owner else (target_table.primary_id if target_table else f"{target}id"),
        "ReferencingEntity": table.logical, "ReferencingAttribute": column,
        "ReferencingEntityNavigationPropertyName": nav_name(table, column, target, style),
        "ReferencedEntityNavigationPropertyName": name,
        "RelationshipType": "OneToManyRelationship", "IsCustomRelationship": False,
        "MetadataId": metadata_id("relationship", name, table.logical, column),
    }


def many_to_one(table: Table, style: str) -> list[dict[str, Any]]:
    """ManyToOneRelationships: one per lookup target; owner is one relationship to the `owner` entity
    (account.md: owner_accounts, ReferencedEntity owner, nav ownerid)."""
    out = []
    for column, lookup in table.lookups.items():
        targets = lookup.targets[:1] if column == "ownerid" else lookup.targets
        out += [_relationship(table, column, target, style) for target in targets]
    return out
