"""Entity sets of the stand-in: BC API v2.0 field names with their defaults, and number series.

The default's Python type is the field's type: it drives request validation and `$filter` parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
V2 = "v2.0"  # the standard API
# The company's local currency. APIV2 pages show a blank "Currency Code" as the LCY code and read the LCY code
# written to them as blank (customers, salesOrders, salesInvoices: SetCalculatedFields calls "Graph Mgt -
# General Tools".TranslateNAVCurrencyCodeToCurrencyCode; shared/samples/bc-customer.json: "USD", currencyId 0).
LCY_CODE = "USD"
LCY_TRANSLATED = frozenset({"customers", "salesOrders", "salesInvoices"})
CUSTOM = "bcsync/integration/v1.0"  # the custom API (mappings.md)

ADDRESS = {"addressLine1": "", "addressLine2": "", "city": "", "state": "", "country": "", "postalCode": ""}


def _prefixed(prefix: str) -> dict[str, Any]:
    # Documents name the postal code `…PostCode` (sellToPostCode), customers `postalCode`.
    names = {k: k[0].upper() + k[1:] for k in ADDRESS} | {"postalCode": "PostCode"}
    return {prefix + names[k]: v for k, v in ADDRESS.items()}


@dataclass(frozen=True)
class EntityDef:
    name: str  # entity set name, e.g. "customers"
    caption: str  # table caption used in BC's messages
    fields: dict[str, Any]
    api: str = V2
    number_prefix: str | None = None  # number series, e.g. "C" → C00010, C00020 …
    unique: str | None = None  # the user-visible key: "number" or "code"
    readonly: frozenset[str] = frozenset({"id", "lastModifiedDateTime"})  # SystemId, SystemModifiedAt
    parent: str | None = None  # lines: the header entity set
    subscribable: bool = True
    entity: str = ""  # the page's EntityName (customer, salesOrderLine …): Microsoft.NAV.<entity> in $metadata
    extra: dict[str, Any] = field(default_factory=dict)


_COMMON_RO = frozenset({"id", "lastModifiedDateTime"})
_DOC_RO = _COMMON_RO | {
    "totalAmountExcludingTax", "totalTaxAmount", "totalAmountIncludingTax", "customerName",
    "status", "fullyShipped", "remainingAmount", "orderId", "orderNumber",
}
_LINE_RO = _COMMON_RO | {
    "documentId", "amountExcludingTax", "totalTaxAmount", "amountIncludingTax", "netAmount",
    "netTaxAmount", "netAmountIncludingTax", "shippedQuantity", "invoicedQuantity",
}

_DOC_HEADER: dict[str, Any] = {
    "id": "", "number": "", "externalDocumentNumber": "", "postingDate": "",
    "customerId": EMPTY_GUID, "customerNumber": "", "customerName": "",
    "billToName": "", "billToCustomerId": EMPTY_GUID, "billToCustomerNumber": "",
    "shipToName": "", "shipToContact": "",
    **_prefixed("sellTo"), **_prefixed("billTo"), **_prefixed("shipTo"),
    "currencyId": EMPTY_GUID, "currencyCode": "", "pricesIncludeTax": False,
    "paymentTermsId": EMPTY_GUID, "shipmentMethodId": EMPTY_GUID, "salesperson": "",
    "discountAmount": 0.0, "discountAppliedBeforeTax": True,
    "totalAmountExcludingTax": 0.0, "totalTaxAmount": 0.0, "totalAmountIncludingTax": 0.0,
    "phoneNumber": "", "email": "", "lastModifiedDateTime": "",
}
_LINE: dict[str, Any] = {
    "id": "", "documentId": "", "sequence": 0, "itemId": EMPTY_GUID, "accountId": EMPTY_GUID,
    "lineType": "Item", "lineObjectNumber": "", "description": "", "description2": "",
    "unitOfMeasureId": EMPTY_GUID, "unitOfMeasureCode": "", "quantity": 0.0, "unitPrice": 0.0,
    "discountAmount": 0.0, "discountPercent": 0.0, "discountAppliedBeforeTax": True,
    "amountExcludingTax": 0.0, "taxCode": "", "taxPercent": 0.0, "totalTaxAmount": 0.0,
    "amountIncludingTax": 0.0, "invoiceDiscountAllocation": 0.0, "netAmount": 0.0,
    "netTaxAmount": 0.0, "netAmountIncludingTax": 0.0, "shipmentDate": "0001-01-01",
    "itemVariantId": EMPTY_GUID, "locationId": EMPTY_GUID,
}

ENTITIES: dict[str, EntityDef] = {e.name: e for e in [
    EntityDef("customers", "Customer", {
        "id": "", "number": "", "displayName": "", "type": "Company", **ADDRESS,
        "phoneNumber": "", "email": "", "website": "", "salespersonCode": "", "balanceDue": 0.0,
        "creditLimit": 0.0, "taxLiable": False, "taxAreaId": EMPTY_GUID, "taxAreaDisplayName": "",
        "taxRegistrationNumber": "", "currencyId": EMPTY_GUID, "currencyCode": "",
        "paymentTermsId": EMPTY_GUID, "shipmentMethodId": EMPTY_GUID, "paymentMethodId": EMPTY_GUID,
        "blocked": " ", "lastModifiedDateTime": "",
    }, number_prefix="C", unique="number", readonly=_COMMON_RO | {"balanceDue"}, entity="customer"),
    # Page 30071 "APIV2 - Contacts" without `jobTitle`: the older APIV2 page (microsoft/ALAppExtensions) has
    # none; BCApps v29 added field(jobTitle; Rec."Job Title"). This project follows the reading without it.
    EntityDef("contacts", "Contact", {
        "id": "", "number": "", "type": "Person", "displayName": "", "companyNumber": "",
        "companyName": "", "contactBusinessRelation": "None", **ADDRESS, "phoneNumber": "",
        "mobilePhoneNumber": "", "email": "", "website": "", "searchName": "",
        "privacyBlocked": False, "taxRegistrationNumber": "", "lastModifiedDateTime": "",
    }, number_prefix="CT", unique="number", entity="contact",
        readonly=_COMMON_RO | {"companyName", "contactBusinessRelation", "searchName"}),
    EntityDef("salespeoplePurchasers", "Salesperson/Purchaser", {
        "id": "", "code": "", "displayName": "", "email": "", "email2": "", "phoneNo": "",
        "jobTitle": "", "commisionPercent": 0.0, "privacyBlocked": False, "blocked": False,
        "lastModifiedDateTime": "",
    }, unique="code", entity="salespersonPurchaser"),
    EntityDef("items", "Item", {
        "id": "", "number": "", "displayName": "", "displayName2": "", "type": "Inventory",
        "itemCategoryId": EMPTY_GUID, "itemCategoryCode": "", "blocked": False, "gtin": "",
        "inventory": 0.0, "unitPrice": 0.0, "priceIncludesTax": False, "unitCost": 0.0,
        "taxGroupId": EMPTY_GUID, "taxGroupCode": "", "baseUnitOfMeasureId": EMPTY_GUID,
        "baseUnitOfMeasureCode": "", "generalProductPostingGroupId": EMPTY_GUID,
        "generalProductPostingGroupCode": "", "inventoryPostingGroupId": EMPTY_GUID,
        "inventoryPostingGroupCode": "", "lastModifiedDateTime": "",
    }, number_prefix="I", unique="number", readonly=_COMMON_RO | {"inventory"}, entity="item"),
    EntityDef("unitsOfMeasure", "Unit of Measure", {
        "id": "", "code": "", "displayName": "", "internationalStandardCode": "", "symbol": "",
        "lastModifiedDateTime": "",
    }, unique="code", entity="unitOfMeasure"),
    EntityDef("currencies", "Currency", {
        "id": "", "code": "", "displayName": "", "symbol": "", "amountDecimalPlaces": "2:2",
        "amountRoundingPrecision": 0.01, "lastModifiedDateTime": "",
    }, unique="code", entity="currency"),
    EntityDef("salesOrders", "Sales Header", {
        **_DOC_HEADER, "orderDate": "", "requestedDeliveryDate": "0001-01-01", "partialShipping": False,
        "shortcutDimension1Code": "", "shortcutDimension2Code": "", "fullyShipped": False,
        "status": "Draft",
    }, number_prefix="SO", unique="number", readonly=_DOC_RO, entity="salesOrder"),
    EntityDef("salesOrderLines", "Sales Line", {
        **_LINE, "shippedQuantity": 0.0, "invoicedQuantity": 0.0, "invoiceQuantity": 0.0,
        "shipQuantity": 0.0,
    }, readonly=_LINE_RO, parent="salesOrders", subscribable=False, entity="salesOrderLine"),
    EntityDef("salesInvoices", "Sales Invoice Header", {
        **_DOC_HEADER, "invoiceDate": "", "dueDate": "", "customerPurchaseOrderReference": "",
        "orderId": EMPTY_GUID, "orderNumber": "", "remainingAmount": 0.0, "status": "Draft",
    }, number_prefix="SI", unique="number", readonly=_DOC_RO, entity="salesInvoice"),
    EntityDef("salesInvoiceLines", "Sales Invoice Line", dict(_LINE),
              readonly=_LINE_RO, parent="salesInvoices", subscribable=False, entity="salesInvoiceLine"),
    # The custom API `bcsync/integration/v1.0` (mappings.md: resources and prices). These field lists are
    # exactly those of the extension's AL pages (deploy/bc-extension): keep the two in step.
    EntityDef("resources", "Resource", {
        "id": "", "number": "", "displayName": "", "baseUnitOfMeasureCode": "", "unitPrice": 0.0,
        "unitCost": 0.0, "blocked": False, "lastModifiedDateTime": "",
    }, api=CUSTOM, number_prefix="R", unique="number", entity="resource"),
    EntityDef("customerPriceGroups", "Customer Price Group", {
        "id": "", "code": "", "description": "", "currencyCode": "", "lastModifiedDateTime": "",
    }, api=CUSTOM, unique="code", entity="customerPriceGroup"),
    # Over table 7001 "Price List Line"; `status` is its field 30 Status, enum 7005 "Price Status". Only Active
    # lines take part in BC's price calculation (codeunit "Price Calculation Buffer Mgt.").
    EntityDef("salesPrices", "Price List Line", {
        "id": "", "itemId": EMPTY_GUID, "customerPriceGroupCode": "", "currencyCode": "",
        "unitOfMeasureCode": "", "unitPrice": 0.0, "minimumQuantity": 0.0, "status": "Active",
        "lastModifiedDateTime": "",
    }, api=CUSTOM, entity="salesPrice"),
]}

# Page 30072 "APIV2 - Contacts Information" over the temporary table 5049 "Contact Information Buffer"
# (ODataKeyFields = "Contact Id"; insert, modify and delete not allowed): computed on read, never stored.
CONTACT_INFO = EntityDef("contactsInformation", "Contact Information Buffer", {
    "contactId": "", "contactNumber": "", "contactName": "", "contactType": "Company", "relatedId": "",
    "relatedType": "Customer",
}, readonly=frozenset({"contactId", "contactNumber", "contactName", "contactType", "relatedId", "relatedType"}),
    subscribable=False, entity="contactInformation")

LINES_OF = {"salesOrders": "salesOrderLines", "salesInvoices": "salesInvoiceLines"}
# Posted invoices have their own number series in BC ("PSI…"): a posted draft gets a new number.
POSTED_INVOICE_PREFIX = "PSI"


def entity_for(api: str, name: str) -> EntityDef | None:
    entity = ENTITIES.get(name)
    return entity if entity and entity.api == api else None
