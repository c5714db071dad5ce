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

MAPPINGS: tuple[TableMapping, ...] = (
    TableMapping("SALESPEOPLE", "salespeoplePurchasers", "systemuser", Direction.FROM_CRM),
    TableMapping("CURRENCY", "currencies", "transactioncurrency", Direction.TO_CRM),
    TableMapping("UNITOFMEASURE", "unitsOfMeasure", "uomschedule", Direction.TO_CRM,
                 extra_dataverse_entities=("uom",)),
    TableMapping("CUSTOMER", "customers", "account", Direction.BOTH, ("SALESPEOPLE", "CURRENCY")),
    TableMapping("CONTACT", "contacts", "contact", Direction.BOTH, ("CUSTOMER",)),
    TableMapping("ITEM-PRODUCT", "items", "product", Direction.TO_CRM, ("UNITOFMEASURE", "CURRENCY")),
    TableMapping("RESOURCE-PRODUCT", "resources", "product", Direction.TO_CRM, ("UNITOFMEASURE", "CURRENCY"),
                 bc_api=CUSTOM_API),
    TableMapping("CUSTPRCGRP-PRICE", "customerPriceGroups", "pricelevel", Direction.TO_CRM,
                 ("CURRENCY", "ITEM-PRODUCT"), bc_api=CUSTOM_API),
    TableMapping("SALESPRC-PRODPRICE", "salesPrices", "productpricelevel", Direction.TO_CRM,
                 ("CUSTPRCGRP-PRICE", "ITEM-PRODUCT"), bc_api=CUSTOM_API),
    TableMapping("SALESORDER-ORDER", "salesOrders", "salesorder", Direction.FROM_CRM,
                 ("CUSTOMER", "ITEM-PRODUCT"), extra_dataverse_entities=("salesorderdetail",)),
    TableMapping("POSTEDSALESINV-INV", "salesInvoices", "invoice", Direction.TO_CRM,
                 ("CUSTOMER", "ITEM-PRODUCT", "SALESORDER-ORDER"), extra_dataverse_entities=("invoicedetail",)),
)

BY_NAME: dict[str, TableMapping] = {m.name: m for m in MAPPINGS}


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
