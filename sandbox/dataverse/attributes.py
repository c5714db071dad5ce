"""Column definitions as `EntityDefinitions(..)/Attributes` returns them, with their option sets.

Shapes from "Query table definitions using the Web API": AttributeType is an AttributeTypeCode member
("String", "Picklist", "Lookup", ...); IsValidForCreate/IsValidForUpdate/IsValidForRead are booleans; an
option is {"Value", "Label": {"LocalizedLabels": [..], "UserLocalizedLabel": {"Label", "LanguageCode"}}}.
The generated table references say read-only columns "return false for both IsValidForCreate or
IsValidForUpdate"; per-column exceptions are listed in CREATE_ONLY / UPDATE_ONLY with their reference.
"""

from __future__ import annotations

from typing import Any

from sandbox.dataverse import rules
from sandbox.dataverse.schema import (
    BOOL,
    DATETIME,
    DECIMAL,
    GUID,
    INT,
    LOOKUP,
    MONEY,
    OPTION,
    STRING,
    SYSTEM_COLUMNS,
    Table,
    choice_labels,
)
from sandbox.dataverse.values import metadata_id

_TYPES = {STRING: "String", INT: "Integer", DECIMAL: "Decimal", MONEY: "Money", BOOL: "Boolean",
          DATETIME: "DateTime", GUID: "Uniqueidentifier"}
# AttributeType → the metadata type a collection is cast to (Lookup, Customer and Owner are all lookups).
METADATA_TYPES = {"String": "StringAttributeMetadata", "Integer": "IntegerAttributeMetadata",
                  "BigInt": "BigIntAttributeMetadata", "Decimal": "DecimalAttributeMetadata",
                  "Money": "MoneyAttributeMetadata", "Boolean": "BooleanAttributeMetadata",
                  "DateTime": "DateTimeAttributeMetadata", "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
                  "Picklist": "PicklistAttributeMetadata", "State": "StateAttributeMetadata",
                  "Status": "StatusAttributeMetadata", "Lookup": "LookupAttributeMetadata",
                  "Customer": "LookupAttributeMetadata", "Owner": "LookupAttributeMetadata"}
OPTION_SET_TYPES = {"PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata",
                    "BooleanAttributeMetadata"}
PROPERTIES = ("LogicalName", "EntityLogicalName", "AttributeType", "IsValidForCreate", "IsValidForUpdate",
              "IsValidForRead", "MetadataId")
# product.md (2017): PriceLevelId IsValidForCreate False, ProductStructure IsValidForUpdate False;
# productpricelevel.md: TransactionCurrencyId IsValidForCreate False; team.md: TeamType IsValidForUpdate False.
UPDATE_ONLY = {("product", "pricelevelid"), ("productpricelevel", "transactioncurrencyid")}
CREATE_ONLY = {("product", "productstructure"), ("team", "teamtype")}
UNREADABLE = {"authvalue"}  # serviceendpoint.md: AuthValue IsValidForRead False


def attribute_type(table: Table, column: str) -> str:
    if column == "versionnumber":
        return "BigInt"  # every reference: VersionNumber Type BigInt
    if column in ("statecode", "statuscode"):
        return "State" if column == "statecode" else "Status"
    kind = table.column_type(column)
    if kind == OPTION:
        return "Picklist"
    if kind == LOOKUP:
        if column == "ownerid":
            return "Owner"
        return "Customer" if set(table.lookups[column].targets) == {"account", "contact"} else "Lookup"
    return _TYPES[kind or STRING]


def _validity(table: Table, column: str) -> tuple[bool, bool]:
    if column in SYSTEM_COLUMNS or column in table.read_only or column == "owningbusinessunit":
        return False, False
    if column == table.primary_id:
        return True, False  # a create may choose the id
    if column == "statecode":
        return False, True  # rows start in their initial state; SetState is an update
    key = (table.logical, column)
    return key not in UPDATE_ONLY, key not in CREATE_ONLY


def columns(table: Table) -> list[str]:
    return [*table.columns, *(c for c in table.lookups if c not in table.columns)]


def attribute(table: Table, column: str) -> dict[str, Any]:
    kind = attribute_type(table, column)
    create, update = _validity(table, column)
    out: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{METADATA_TYPES[kind]}", "LogicalName": column,
        "EntityLogicalName": table.logical, "AttributeType": kind, "IsValidForCreate": create,
        "IsValidForUpdate": update, "IsValidForRead": column not in UNREADABLE,
        "MetadataId": metadata_id("attribute", table.logical, column),
    }
    if column in table.lookups:
        out["Targets"] = list(table.lookups[column].targets)
    return out


def _label(text: str, *key: str) -> dict[str, Any]:
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True,
                 "MetadataId": metadata_id("label", *key), "HasChanged": None}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": localized}


def _option(table: Table, column: str, value: int, text: str) -> dict[str, Any]:
    return {"Value": value, "Color": None, "IsManaged": True, "ExternalValue": None, "ParentValues": [],
            "MetadataId": None, "HasChanged": None,
            "Label": _label(text, table.logical, column, str(value)),
            "Description": {"LocalizedLabels": [], "UserLocalizedLabel": None}}


def option_set(table: Table, column: str) -> dict[str, Any]:
    """The column's OptionSet: State options carry DefaultStatus/InvariantName, Status options their State."""
    kind = attribute_type(table, column)
    out: dict[str, Any] = {"MetadataId": metadata_id("optionset", table.logical, column),
                           "Name": f"{table.logical}_{column}", "IsGlobal": False, "OptionSetType": kind}
    if kind == "Boolean":
        out["TrueOption"] = _option(table, column, 1, "Yes")
        out["FalseOption"] = _option(table, column, 0, "No")
        return out
    labels = choice_labels(table.logical, column)
    statuses = rules.STATUSES.get(table.logical, rules.DEFAULT_STATUSES)
    options = []
    if kind == "State":
        for state, allowed in statuses.items():
            text = labels.get(state, str(state))
            options.append({**_option(table, column, state, text), "DefaultStatus": allowed[0],
                            "InvariantName": text.replace(" ", "")})
    elif kind == "Status":
        for state, allowed in statuses.items():
            options += [{**_option(table, column, status, labels.get(status, str(status))), "State": state,
                         "TransitionData": None} for status in allowed]
    else:
        options = [_option(table, column, value, text) for value, text in labels.items()]
    out["Options"] = options
    return out
