"""Dataverse Web API v9.2 client (httpx, connection-pooled, MSAL bearer tokens, request budget).

Our writes carry `?tag=<integration tag>`: Dataverse puts it into the webhook's SharedVariables, which is
how the webhook door recognises (and drops) the echoes of our own writes. The tag is the installation's
random one (service/store/installation.py), so nobody else's write can carry it.

Lookups are written by their column's name (`"ownerid@odata.bind": "/systemusers(<id>)"`); the client
renames each to the org's navigation property before sending (service/connectors/navigation.py).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

import httpx

from service.connectors.budget import RequestBudget
from service.connectors.http import ApiError, ApiTransport, NotFound, Tokens, odata_params, with_query
from service.connectors.navigation import BIND, TABLE_OF_SET, NavigationNames

__all__ = ["DataverseClient", "DataverseError", "Tokens"]

DataverseError = ApiError  # the name callers used before the shared transport existed

_HEADERS = {"OData-MaxVersion": "4.0", "OData-Version": "4.0"}
_REPRESENTATION = {"Prefer": "return=representation"}


class DataverseClient:
    def __init__(self, api_root: str, scope: str, tokens: Tokens, budget: RequestBudget | None = None, *,
                 tag: str | None = None, timeout: float = 30.0, max_attempts: int = 6) -> None:
        self.api_root = api_root.rstrip("/")
        self.scope = scope
        self.tokens = tokens
        self.budget = budget
        self.tag = tag
        self.transport = ApiTransport("Dataverse", scope, tokens, budget, timeout=timeout,
                                      max_attempts=max_attempts, headers=_HEADERS,
                                      # Dataverse throttles beyond 52 concurrent requests per user.
                                      max_concurrency=50)
        self.navigation = NavigationNames(self.many_to_one)

    def _url(self, path: str, *, tagged: bool = False) -> str:
        url = f"{self.api_root}/{path.lstrip('/')}"
        return with_query(url, {"tag": self.tag}) if tagged and self.tag else url

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call with the shared retry policy (kept for callers of the first version)."""
        return await self.transport.request(method, self._url(path), **kwargs)

    async def list(self, entity_set: str, *, filter: str | None = None, select: builtins.list[str] | None = None,
                   orderby: str | None = None, page_size: int = 1000) -> AsyncIterator[dict[str, Any]]:
        params = odata_params(filter=filter, select=select, orderby=orderby)
        # Dataverse pages hold at most 5,000 rows; a larger preference would be ignored anyway.
        async for row in self.transport.pages(self._url(entity_set), params, min(page_size, 5000)):
            yield row

    async def get(self, entity_set: str, record_id: str, *,
                  select: builtins.list[str] | None = None) -> dict[str, Any] | None:
        url = with_query(self._url(f"{entity_set}({record_id})"), odata_params(select=select))
        response = await self.transport.request("GET", url, allow=frozenset({404}))
        return None if response.status_code == 404 else dict(response.json())

    async def many_to_one(self, table: str) -> builtins.list[dict[str, Any]]:
        """The table's lookups with their navigation property names (metadata; see navigation.py)."""
        url = with_query(self._url(f"EntityDefinitions(LogicalName='{table}')/ManyToOneRelationships"), {
            "$select": "ReferencingAttribute,ReferencedEntity,ReferencingEntityNavigationPropertyName"})
        return list((await self.transport.request("GET", url)).json().get("value", []))

    async def attributes(self, table: str) -> builtins.list[dict[str, Any]]:
        """The table's columns: LogicalName, AttributeType, IsValidForCreate, IsValidForUpdate ("Query table
        definitions using the Web API"). NotFound when the org has no such table."""
        url = with_query(self._url(f"EntityDefinitions(LogicalName='{table}')/Attributes"), {
            "$select": "LogicalName,AttributeType,IsValidForCreate,IsValidForUpdate"})
        return list((await self.transport.request("GET", url)).json().get("value", []))

    async def option_values(self, table: str) -> dict[str, set[int]]:
        """The values of the table's choice columns (picklists; the metadata must be cast to the attribute
        type to expand its OptionSet)."""
        url = with_query(self._url(f"EntityDefinitions(LogicalName='{table}')/Attributes/"
                                   "Microsoft.Dynamics.CRM.PicklistAttributeMetadata"),
                         {"$select": "LogicalName", "$expand": "OptionSet($select=Options)"})
        rows = (await self.transport.request("GET", url)).json().get("value", [])
        return {str(row.get("LogicalName")): {int(o["Value"]) for o in (row.get("OptionSet") or {}).get("Options", [])
                                              if isinstance(o.get("Value"), int)} for row in rows}

    async def _outgoing(self, entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body with its lookups named as the org names them (no metadata read when there are none)."""
        if not _binds(body):
            return body
        return await self.navigation.translate(TABLE_OF_SET.get(entity_set, entity_set), body)

    async def create(self, entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
        body = await self._outgoing(entity_set, body)
        response = await self.transport.request("POST", self._url(entity_set, tagged=True), json=body,
                                                headers=dict(_REPRESENTATION))
        if response.status_code == 204:  # a table that ignores return=representation: read it back
            entity_id = response.headers.get("OData-EntityId", "").rsplit("(", 1)[-1].rstrip(")")
            return await self.get(entity_set, entity_id) or {}
        return dict(response.json())

    async def update(self, entity_set: str, record_id: str, body: dict[str, Any],
                     etag: str | None = None) -> dict[str, Any]:
        # Without If-Match a PATCH is an upsert: a record deleted meanwhile would silently come back.
        headers = {**_REPRESENTATION, "If-Match": etag or "*"}
        body = await self._outgoing(entity_set, body)
        response = await self.transport.request("PATCH", self._url(f"{entity_set}({record_id})", tagged=True),
                                                json=body, headers=headers)
        return dict(response.json()) if response.content else {}

    async def delete(self, entity_set: str, record_id: str) -> bool:
        response = await self.transport.request("DELETE", self._url(f"{entity_set}({record_id})", tagged=True),
                                                allow=frozenset({404}))
        return response.status_code != 404

    async def action(self, name: str, body: dict[str, Any], *, bound_to: str | None = None) -> dict[str, Any] | None:
        """An action, e.g. FulfillSalesOrder; None when it answers 204 (no return value). Microsoft's references
        disagree whether some are unbound (`POST /FulfillSalesOrder`, the 2017 salesorder reference) or bound to
        their table's collection (`POST /salesorders/Microsoft.Dynamics.CRM.FulfillSalesOrder`, the CRM 2016
        Web API reference): with `bound_to` (the entity set), a 404 of the unbound form tries the bound one."""
        body = await self._outgoing("", body)
        try:
            response = await self.transport.request("POST", self._url(name, tagged=True), json=body)
        except NotFound:
            if bound_to is None:
                raise
            response = await self.transport.request(
                "POST", self._url(f"{bound_to}/Microsoft.Dynamics.CRM.{name}", tagged=True), json=body)
        return dict(response.json()) if response.content else None

    async def who_am_i(self) -> str:
        """The UserId of the caller: the integration's application user."""
        body = (await self.transport.request("GET", self._url("WhoAmI"))).json()
        return str(body["UserId"]).lower()

    async def aclose(self) -> None:
        await self.transport.aclose()


def _binds(value: Any) -> bool:
    if isinstance(value, dict):
        return any((isinstance(k, str) and k.endswith(BIND)) or _binds(v) for k, v in value.items())
    return False
