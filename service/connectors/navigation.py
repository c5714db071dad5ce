"""The org's navigation property names, so that the integration writes lookups by their columns' names.

A lookup is written `"<navigation property>@odata.bind": "/<set>(<id>)"`, and Dataverse matches the name
case-sensitively ("Web API Navigation Properties": "This value is case sensitive"). The name is the org's,
not ours: it differs in case between tables and orgs (Microsoft's own references disagree on product's
`defaultuomid` / `DefaultUoMId`; customizations add names like `msdyn_AccountManagerId`), and a multi-table
lookup has one per target (`parentcustomerid_account`). An unknown name is a 400 ("An undeclared property …
which only has property annotations in the payload", Learn "Troubleshoot Dataverse Web API client errors").

So the rules write `"<lookup column>@odata.bind"` (`parentcustomerid@odata.bind`, `defaultuomid@odata.bind`)
and the client translates each key on the way out, from the org's metadata:
`EntityDefinitions(LogicalName='<table>')/ManyToOneRelationships` gives, per relationship,
`ReferencingAttribute` (the column), `ReferencedEntity` (the target table) and
`ReferencingEntityNavigationPropertyName` (the name to write). Read once per table and process, cached.
When an org's metadata cannot be read at all, the names Microsoft's table references give are used (the
column's name; `<column>_<target>` for the multi-table lookups we write), with a warning in the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from service.connectors.http import ApiError
from service.logging import get_logger

log = get_logger(__name__)

BIND = "@odata.bind"
# Table logical names of the entity sets the integration writes to or binds (the plural forms are the
# standard tables' own `EntitySetName`s; custom tables would be added here).
TABLE_OF_SET: dict[str, str] = {
    "systemusers": "systemuser", "teams": "team", "transactioncurrencies": "transactioncurrency",
    "uomschedules": "uomschedule", "uoms": "uom", "accounts": "account", "contacts": "contact",
    "products": "product", "pricelevels": "pricelevel", "productpricelevels": "productpricelevel",
    "salesorders": "salesorder", "salesorderdetails": "salesorderdetail", "invoices": "invoice",
    "invoicedetails": "invoicedetail", "serviceendpoints": "serviceendpoint", "sdkmessages": "sdkmessage",
    "sdkmessagefilters": "sdkmessagefilter", "sdkmessageprocessingsteps": "sdkmessageprocessingstep",
    "sdkmessageprocessingstepimages": "sdkmessageprocessingstepimage", "orderclose": "orderclose",
}
_TYPE_PREFIX = "Microsoft.Dynamics.CRM."
# Multi-table lookups the integration writes: without metadata, their names are `<column>_<target>`.
_MULTI_TABLE = frozenset({"customerid", "parentcustomerid", "eventhandler"})


class UnknownLookup(LookupError):
    """The org has no navigation property for this column (and target): a mapping that needs it cannot run."""


@dataclass(frozen=True)
class Relationship:
    column: str  # ReferencingAttribute
    target: str  # ReferencedEntity ("owner" for ownerid)
    navigation: str  # ReferencingEntityNavigationPropertyName


Fetch = Callable[[str], Awaitable[list[dict[str, Any]]]]  # table → its ManyToOneRelationships rows


class NavigationNames:
    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._tables: dict[str, list[Relationship]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._unreadable: set[str] = set()

    async def relationships(self, table: str) -> list[Relationship]:
        if table not in self._tables:
            async with self._locks.setdefault(table, asyncio.Lock()):  # one metadata read per table
                if table not in self._tables:
                    try:
                        rows = await self._fetch(table)
                    except ApiError as exc:
                        if exc.status not in (400, 404, 405, 501):
                            raise  # throttled, unavailable: try again with the next write
                        log.warning("navigation names unreadable; using Microsoft's documented names", table=table,
                                    status=exc.status, error=exc.message[:200])
                        self._unreadable.add(table)
                        rows = []
                    self._tables[table] = [
                        Relationship(str(r.get("ReferencingAttribute") or "").lower(),
                                     str(r.get("ReferencedEntity") or "").lower(),
                                     str(r.get("ReferencingEntityNavigationPropertyName") or ""))
                        for r in rows if r.get("ReferencingEntityNavigationPropertyName")]
        return self._tables[table]

    async def name(self, table: str, column: str, target: str | None) -> str:
        """The navigation property of `table.column` toward `target` (a table logical name, or None)."""
        found = await self.relationships(table)
        wanted = column.lower()
        if table in self._unreadable:
            return f"{wanted}_{target}" if wanted in _MULTI_TABLE and target else wanted
        of_column = [r for r in found if r.column == wanted]
        exact = [r for r in of_column if target and r.target == target]
        if len(exact) == 1:
            return exact[0].navigation
        if len(of_column) == 1:  # ownerid's target is "owner", whichever principal is bound
            return of_column[0].navigation
        # Already a navigation name in some spelling (e.g. a caller wrote parentcustomerid_account).
        named = [r for r in found if r.navigation.lower() == wanted]
        if len(named) == 1:
            return named[0].navigation
        choices = ", ".join(sorted(f"{r.column}→{r.target}: {r.navigation}" for r in of_column)) or "none"
        raise UnknownLookup(f"{table}.{column} has no navigation property toward {target or 'its target'} in this "
                            f"Dataverse org (relationships of that column: {choices})")

    async def translate(self, table: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body with every `<column>@odata.bind` key renamed to the org's navigation property; nested
        entities that name their type (`"@odata.type": "Microsoft.Dynamics.CRM.orderclose"`) too."""
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key.endswith(BIND) and not key.startswith("@"):
                column = key[: -len(BIND)]
                out[await self.name(table, column, target_of(value)) + BIND] = value
            elif isinstance(value, dict) and isinstance(value.get("@odata.type"), str):
                out[key] = await self.translate(type_table(value["@odata.type"]), value)
            else:
                out[key] = value
        return out


def target_of(value: Any) -> str | None:
    """The table a bind value points at: `/accounts(<id>)` (or an absolute URL of it) → account."""
    if not isinstance(value, str) or "(" not in value:
        return None
    entity_set = value.rsplit("(", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return TABLE_OF_SET.get(entity_set, entity_set)


def type_table(odata_type: str) -> str:
    return odata_type.lstrip("#").removeprefix(_TYPE_PREFIX)
