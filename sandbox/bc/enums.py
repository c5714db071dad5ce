"""Enum (option) fields of the stand-in, their AL enums, and how API v2.0 spells their values.

Memory keeps the AL member name ("In Review", " "); the API shows it per `enum_style`:
- "encoded" (API v2.0, $schemaversion 2.0): the member name as an OData identifier, every character that is
  not a letter, digit or "_" written `_xHHHH_`: " " → "_x0020_", "In Review" → "In_x0020_Review",
  "Non-Inventory" → "Non_x002D_Inventory". Source: Learn "Get itemLedgerEntries" shows `"sourceType": "_x0020_"`
  and `"entryType": "Positive_x0020_Adjmt_x002E_"`; "Transition to API v2.0" (§Enums) says options became enums
  in v2.0; "Non_x002D_Inventory" is seen in third-party clients of items.type (not in a Microsoft page).
- "plain": the member name itself (" ", "In Review"), as Learn's "Get customers" sample shows `"blocked": " "`.
Both spellings are accepted on write and in `$filter` literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def encode(name: str) -> str:
    """An AL member name as BC writes it in API v2.0 JSON and in `$metadata` Member names."""
    return _UNSAFE.sub(lambda m: f"_x{ord(m.group()):04X}_", name)


def decode(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


@dataclass(frozen=True)
class EnumDef:
    name: str  # the OData type name: Microsoft.NAV.<name>
    members: tuple[tuple[int, str], ...]  # (ordinal, AL member name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.members)

    def canonical(self, value: str) -> str | None:
        """The member a JSON value or filter literal names, in either spelling; None if none."""
        if value in self.names:
            return value
        decoded = decode(value)
        return decoded if decoded in self.names else None


# enum 5050 "Contact Type" (BaseApp CRM/Contact); customers.type is Rec."Contact Type" (page 30009).
CONTACT_TYPE = EnumDef("contactType", ((0, "Company"), (1, "Person")))
# enum 139 "Customer Blocked"; page 30009 "APIV2 - Customers" field(blocked; Rec.Blocked).
CUSTOMER_BLOCKED = EnumDef("customerBlocked", ((0, " "), (1, "Ship"), (2, "Invoice"), (3, "All")))
# enum 5056 "Contact Business Relation" (BaseApp CRM/BusinessRelation).
CONTACT_BUSINESS_RELATION = EnumDef("contactBusinessRelation", (
    (0, " "), (1, "Customer"), (2, "Vendor"), (3, "Bank Account"), (4, "Employee"), (100, "None"),
    (101, "Other"), (102, "Multiple")))
# enum 5057 "Contact Business Relation Link To Table": table 5049 "Contact Information Buffer"."Related Type".
RELATED_TYPE = EnumDef("contactBusinessRelationLinkToTable", (
    (0, " "), (1, "Customer"), (2, "Vendor"), (3, "Bank Account"), (4, "Employee")))
# enum 27 "Item Type" (BaseApp Inventory/Item).
ITEM_TYPE = EnumDef("itemType", ((0, "Inventory"), (1, "Service"), (2, "Non-Inventory")))
# enum 5478 "Invoice Line Agg. Line Type": the lineType of sales order and invoice lines.
LINE_TYPE = EnumDef("invoiceLineAggLineType", (
    (0, "Comment"), (1, "Account"), (2, "Item"), (3, "Resource"), (4, "Fixed Asset"), (5, "Charge"),
    (10, "Allocation Account")))
# enum 5495 "Sales Order Entity Buffer Status": salesOrders.status.
ORDER_STATUS = EnumDef("salesOrderEntityBufferStatus", ((0, "Draft"), (1, "In Review"), (2, "Open")))
# enum 5477 "Invoice Entity Aggregate Status": salesInvoices.status (page 30012 "APIV2 - Sales Invoices").
INVOICE_STATUS = EnumDef("invoiceEntityAggregateStatus", (
    (0, " "), (1, "Draft"), (2, "In Review"), (3, "Open"), (4, "Paid"), (5, "Canceled"), (6, "Corrective")))
# enum 7005 "Price Status": table 7001 "Price List Line".Status (the custom API's salesPrices.status).
PRICE_STATUS = EnumDef("priceStatus", ((0, "Draft"), (1, "Active"), (2, "Inactive")))

# (entity set, field) → its enum. BC rejects values outside the enum.
ENUMS: dict[tuple[str, str], EnumDef] = {
    ("customers", "type"): CONTACT_TYPE,
    ("customers", "blocked"): CUSTOMER_BLOCKED,
    ("contacts", "type"): CONTACT_TYPE,
    ("contacts", "contactBusinessRelation"): CONTACT_BUSINESS_RELATION,
    ("items", "type"): ITEM_TYPE,
    ("salesOrders", "status"): ORDER_STATUS,
    ("salesOrderLines", "lineType"): LINE_TYPE,
    ("salesInvoices", "status"): INVOICE_STATUS,
    ("salesInvoiceLines", "lineType"): LINE_TYPE,
    ("contactsInformation", "contactType"): CONTACT_TYPE,
    ("contactsInformation", "relatedType"): RELATED_TYPE,
    ("salesPrices", "status"): PRICE_STATUS,
}
