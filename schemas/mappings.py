"""The integration table mappings of docs (mappings.md) as data: tables, direction, dependencies.

Declared once and used by every path (routing events to queues, worker order, full synchronization).
Field mappings are added per mapping by the sync engine; this module holds the table level.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from graphlib import TopologicalSorter

from schemas.events import routing_key


class Direction(StrEnum):
    TO_CRM = "to_crm"  # BC → Dataverse
    FROM_CRM = "from_crm"  # Dataverse → BC
    BOTH = "both"


class ConflictPolicy(StrEnum):
    SEND = "send"  # Business Central wins
    GET = "get"  # Dynamics 365 Sales wins
    LATEST = "latest"  # the newer modified time wins
    NONE = "none"  # record a conflict error, change nothing


class DeletePolicy(StrEnum):
    REMOVE_COUPLING = "remove-coupling"
    RESTORE = "restore"
    PROPAGATE = "propagate"


@dataclass(frozen=True)
class FieldMap:
    """One field pair: BC API field ⇄ Dataverse column, with its own direction and an optional transform
    (a name the sync engine knows, e.g. `lookup:SALESPEOPLE`, `money`, `nonnegative`, `option:type`)."""

    bc: str
    dataverse: str
    direction: Direction
    transform: str | None = None
    create_only: bool = False  # written when the destination record is created, never updated
    sensitive: bool = False  # recorded as changed in the history, never with its values


@dataclass(frozen=True)
class TableMapping:
    name: str
    bc_entity: str  # BC API entity set
    dataverse_entity: str  # Dataverse table logical name
    direction: Direction
    depends_on: tuple[str, ...] = ()
    bc_api: str = "v2.0"  # "bcsync/integration/v1.0" for the custom API
    # Further tables whose changes concern this mapping (lines notify their header's mapping).
    extra_bc_entities: tuple[str, ...] = ()
    extra_dataverse_entities: tuple[str, ...] = ()
    fields: tuple[FieldMap, ...] = ()
    bc_filter: str | None = None  # OData $filter of records that take part (BC side)
    dataverse_filter: str | None = None  # OData $filter of records that take part (Dataverse side)
    # Templates: values set on records the integration creates; never overwrite mapped values.
    bc_template: tuple[tuple[str, object], ...] = ()
    dataverse_template: tuple[tuple[str, object], ...] = ()
    conflict_policy: ConflictPolicy = ConflictPolicy.LATEST
    delete_policy: DeletePolicy = DeletePolicy.REMOVE_COUPLING
    only_coupled: bool = False  # "synch only coupled records"
    # Match keys for coupling records that exist on both sides: (BC field, Dataverse column) pairs, tried in order.
    match_keys: tuple[tuple[str, str], ...] = ()
    # Changes on the BC side matter although records flow from Sales (an order's shipment comes back).
    bc_feedback: bool = False
    # Lookups the mapping's rule writes besides those of its field list: (table, column, target table). Setup
    # checks that the org has a navigation property for each (its name is read from the org's metadata).
    extra_binds: tuple[tuple[str, str, str], ...] = ()

    @property
    def bc_is_source(self) -> bool:
        """Whether BC-side changes of this mapping must reach us (subscribed or polled)."""
        return self.direction != Direction.FROM_CRM or self.bc_feedback

    @property
    def bc_entities(self) -> tuple[str, ...]:
        return (self.bc_entity, *self.extra_bc_entities)

    @property
    def dataverse_entities(self) -> tuple[str, ...]:
        return (self.dataverse_entity, *self.extra_dataverse_entities)

    @property
    def routing_keys(self) -> tuple[str, ...]:
        return tuple(routing_key("business_central", e) for e in self.bc_entities) + tuple(
            routing_key("dataverse", e) for e in self.dataverse_entities
        )


CUSTOM_API = "bcsync/integration/v1.0"
# Value maps of `option:<name>` transforms (BC enum member → Dataverse choice value).
OPTION_MAPS: dict[str, dict[str, int]] = {
    "itemtype": {"Inventory": 1, "Non-Inventory": 1, "Service": 3},  # item type → producttypecode
}

TO, FROM, BOTH = Direction.TO_CRM, Direction.FROM_CRM, Direction.BOTH
ADDRESS = (
    FieldMap("addressLine1", "address1_line1", BOTH, "text:100"),
    FieldMap("addressLine2", "address1_line2", BOTH, "text:50"),
    FieldMap("city", "address1_city", BOTH, "text:30"),
    FieldMap("state", "address1_stateorprovince", BOTH, "text:30"),
    FieldMap("postalCode", "address1_postalcode", BOTH, "text:20"),
    FieldMap("country", "address1_country", BOTH, "text:10"),
)
PRODUCT_FIELDS = (
    FieldMap("number", "productnumber", TO, "text:20"),
    FieldMap("displayName", "name", BOTH, "text:100"),
    FieldMap("unitPrice", "price", TO, "money"),
    FieldMap("unitCost", "standardcost", TO, "money"),
    FieldMap("unitCost", "currentcost", TO, "money"),
    FieldMap("baseUnitOfMeasureCode", "defaultuomscheduleid", TO, "lookup:UNITOFMEASURE"),
)

# What the product rules write besides the field list: the default unit and the integration's default price list
# with one price list item per product (consumers/rules/products.py, prices.py).
PRICE_ITEM_BINDS = (("productpricelevel", "pricelevelid", "pricelevel"), ("productpricelevel", "productid", "product"),
                    ("productpricelevel", "uomid", "uom"), ("productpricelevel", "uomscheduleid", "uomschedule"),
                    ("productpricelevel", "transactioncurrencyid", "transactioncurrency"))
PRODUCT_BINDS = (("product", "defaultuomid", "uom"), ("product", "pricelevelid", "pricelevel"),
                 ("pricelevel", "transactioncurrencyid", "transactioncurrency"), *PRICE_ITEM_BINDS)

MAPPINGS: tuple[TableMapping, ...] = (
    TableMapping(
        "SALESPEOPLE", "salespeoplePurchasers", "systemuser", FROM,
        fields=(FieldMap("displayName", "fullname", FROM, "text:50"),
                FieldMap("email", "internalemailaddress", FROM, "text:80"),
                FieldMap("phoneNo", "mobilephone", FROM, "text:30")),
        dataverse_filter="isdisabled eq false and islicensed eq true",
        match_keys=(("email", "internalemailaddress"),),
    ),
    TableMapping(
        "CURRENCY", "currencies", "transactioncurrency", TO,
        fields=(FieldMap("code", "isocurrencycode", TO, "text:5", create_only=True),
                FieldMap("symbol", "currencysymbol", TO, "text:10"),
                FieldMap("displayName", "currencyname", TO, "text:100")),
        dataverse_template=(("exchangerate", 1.0),),
        match_keys=(("code", "isocurrencycode"),),
    ),
    TableMapping(
        "UNITOFMEASURE", "unitsOfMeasure", "uomschedule", TO, extra_dataverse_entities=("uom",),
        fields=(FieldMap("code", "name", TO, "text:10"),
                FieldMap("code", "baseuomname", TO, "text:10", create_only=True)),
        match_keys=(("code", "name"),),
    ),
    TableMapping(
        "CUSTOMER", "customers", "account", BOTH, ("SALESPEOPLE", "CURRENCY"),
        fields=(FieldMap("displayName", "name", BOTH, "text:100"),
                FieldMap("number", "accountnumber", TO, "text:20"),
                *ADDRESS,
                FieldMap("phoneNumber", "telephone1", BOTH, "text:30"),
                FieldMap("email", "emailaddress1", BOTH, "text:80"),
                FieldMap("website", "websiteurl", BOTH, "text:80"),
                FieldMap("creditLimit", "creditlimit", TO, "money"),
                FieldMap("currencyCode", "transactioncurrencyid", BOTH, "lookup:CURRENCY"),
                FieldMap("salespersonCode", "ownerid", BOTH, "lookup:SALESPEOPLE")),
        bc_filter="blocked eq ' '",
        dataverse_filter="statecode eq 0 and customertypecode eq 3",
        dataverse_template=(("customertypecode", 3),),
        match_keys=(("number", "accountnumber"), ("displayName", "name")),
    ),
    # API v2.0 contacts have no job title (page 30071 "APIV2 - Contacts"): the Sales `jobtitle` is left alone.
    TableMapping(
        "CONTACT", "contacts", "contact", BOTH, ("CUSTOMER",),
        fields=(FieldMap("displayName", "firstname+lastname", BOTH, "name"),
                FieldMap("email", "emailaddress1", BOTH, "text:80"),
                FieldMap("phoneNumber", "telephone1", BOTH, "text:30"),
                FieldMap("mobilePhoneNumber", "mobilephone", BOTH, "text:30"),
                *ADDRESS,
                FieldMap("companyNumber", "parentcustomerid", BOTH, "parent")),
        bc_filter="type eq 'Person'",
        bc_template=(("type", "Person"),),
        match_keys=(("email", "emailaddress1"),),  # within the parent account
    ),
    TableMapping(
        "ITEM-PRODUCT", "items", "product", TO, ("UNITOFMEASURE", "CURRENCY"),
        fields=(*PRODUCT_FIELDS,
                FieldMap("inventory", "quantityonhand", TO, "nonnegative"),
                FieldMap("type", "producttypecode", TO, "option:itemtype")),
        bc_filter="blocked eq false",
        match_keys=(("number", "productnumber"),),
        extra_binds=PRODUCT_BINDS,
    ),
    TableMapping(
        "RESOURCE-PRODUCT", "resources", "product", TO, ("UNITOFMEASURE", "CURRENCY"), bc_api=CUSTOM_API,
        fields=PRODUCT_FIELDS,
        bc_filter="blocked eq false",
        dataverse_template=(("producttypecode", 3),),
        match_keys=(("number", "productnumber"),),
        extra_binds=PRODUCT_BINDS,
    ),
    TableMapping("CUSTPRCGRP-PRICE", "customerPriceGroups", "pricelevel", Direction.TO_CRM,
                 ("CURRENCY", "ITEM-PRODUCT"), bc_api=CUSTOM_API,
                 fields=(FieldMap("code", "name", TO, "text:100"),
                         FieldMap("description", "description", TO, "text"),
                         FieldMap("currencyCode", "transactioncurrencyid", TO, "lookup:CURRENCY")),
                 match_keys=(("code", "name"),)),
    # Prices: group, product and unit are resolved by the rule (consumers/rules/prices.py), which also sets
    # pricingmethodcode 1 (Currency Amount) on every write and skips quantity prices (minimumQuantity > 1).
    TableMapping("SALESPRC-PRODPRICE", "salesPrices", "productpricelevel", Direction.TO_CRM,
                 ("CUSTPRCGRP-PRICE", "ITEM-PRODUCT"), bc_api=CUSTOM_API,
                 fields=(FieldMap("customerPriceGroupCode", "pricelevelid", TO, "lookup:CUSTPRCGRP-PRICE"),
                         FieldMap("itemId", "productid", TO, "lookup:ITEM-PRODUCT"),
                         FieldMap("unitOfMeasureCode", "uomid", TO, "unit:product"),
                         FieldMap("unitPrice", "amount", TO, "money")),
                 # Price list lines in Draft or Inactive do not price anything (table 7001 "Price List Line",
                 # enum 7005 "Price Status"). A custom API without `status` passes this filter.
                 bc_filter="status ne 'Draft' and status ne 'Inactive'",
                 dataverse_template=(("quantitysellingcode", 1),),  # No Control
                 extra_binds=PRICE_ITEM_BINDS),
    # Documents: headers and lines are mapped by their rules (consumers/rules/orders/, invoices.py), which
    # apply the filters below on top of their own (a canceled order still reaches its rule: delete policy).
    TableMapping("SALESORDER-ORDER", "salesOrders", "salesorder", Direction.FROM_CRM,
                 ("CUSTOMER", "ITEM-PRODUCT"), extra_dataverse_entities=("salesorderdetail",),
                 dataverse_filter="statecode eq 1", bc_feedback=True,
                 extra_binds=(("orderclose", "salesorderid", "salesorder"),)),  # FulfillSalesOrder's OrderClose
    TableMapping("POSTEDSALESINV-INV", "salesInvoices", "invoice", Direction.TO_CRM,
                 ("CUSTOMER", "ITEM-PRODUCT", "SALESORDER-ORDER"), extra_dataverse_entities=("invoicedetail",),
                 bc_filter="status ne 'Draft' and status ne 'In Review'",
                 extra_binds=(("invoice", "customerid", "account"), ("invoice", "salesorderid", "salesorder"),
                              ("invoice", "transactioncurrencyid", "transactioncurrency"),
                              ("invoice", "ownerid", "systemuser"), ("invoicedetail", "invoiceid", "invoice"),
                              ("invoicedetail", "productid", "product"), ("invoicedetail", "uomid", "uom"))),
)

BY_NAME: dict[str, TableMapping] = {m.name: m for m in MAPPINGS}


def sensitive_fields(mapping: TableMapping) -> frozenset[str]:
    """Both sides' names of the mapping's sensitive fields (a composite column such as `firstname+lastname` also
    by each of its parts): the record history records them as changed, never with their values."""
    names: set[str] = set()
    for field in mapping.fields:
        if field.sensitive:
            for name in (field.bc, field.dataverse):
                names.add(name)
                names.update(part for part in name.split("+") if part)
    return frozenset(names)


_BY_ROUTING_KEY: dict[str, list[TableMapping]] = {}
for _mapping in MAPPINGS:
    for _key in _mapping.routing_keys:
        _BY_ROUTING_KEY.setdefault(_key, []).append(_mapping)


def mappings_for(source: str, entity: str) -> list[TableMapping]:
    """The mappings that an entity's change events are routed to (empty: nobody uses that entity)."""
    return list(_BY_ROUTING_KEY.get(routing_key(source, entity), ()))


def dependency_order() -> list[str]:
    """Mapping names so that every mapping comes after the ones it depends on (BC's order)."""
    graph = {m.name: set(m.depends_on) for m in MAPPINGS}
    return list(TopologicalSorter(graph).static_order())


# Dataverse entity set names of the tables the mappings use (the Web API addresses tables by these).
DATAVERSE_SETS: dict[str, str] = {
    "systemuser": "systemusers", "transactioncurrency": "transactioncurrencies", "uomschedule": "uomschedules",
    "uom": "uoms", "account": "accounts", "contact": "contacts", "product": "products", "pricelevel": "pricelevels",
    "productpricelevel": "productpricelevels", "salesorder": "salesorders", "salesorderdetail": "salesorderdetails",
    "invoice": "invoices", "invoicedetail": "invoicedetails",
}


def bc_resources(mappings: tuple[TableMapping, ...] | list[TableMapping] = MAPPINGS) -> list[tuple[str, str]]:
    """(API route, entity set) of every BC table whose changes these mappings need: what to subscribe to."""
    seen: dict[tuple[str, str], None] = {}
    for mapping in mappings:
        if mapping.bc_is_source:
            for entity in mapping.bc_entities:
                seen[(mapping.bc_api, entity)] = None
    return list(seen)


def dataverse_tables(mappings: tuple[TableMapping, ...] | list[TableMapping] = MAPPINGS) -> list[str]:
    """Every Dataverse table these mappings use: what the webhook steps are registered for."""
    return list(dict.fromkeys(t for m in mappings for t in m.dataverse_entities))
