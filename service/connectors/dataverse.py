"""Dataverse Web API v9.2 client (httpx, connection-pooled, MSAL bearer tokens, request budget).

Our writes carry `?tag=<integration tag>`: Dataverse puts it into the webhook's SharedVariables, which is
how the webhook door recognises (and drops) the echoes of our own writes.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

import httpx

from service.connectors.budget import RequestBudget
from service.connectors.http import ApiError, ApiTransport, Tokens, odata_params, with_query

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

    async def create(self, entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
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
        response = await self.transport.request("PATCH", self._url(f"{entity_set}({record_id})", tagged=True),
                                                json=body, headers=headers)
        return dict(response.json()) if response.content else {}

    async def delete(self, entity_set: str, record_id: str) -> bool:
        response = await self.transport.request("DELETE", self._url(f"{entity_set}({record_id})", tagged=True),
                                                allow=frozenset({404}))
        return response.status_code != 404

    async def action(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """An unbound action, e.g. FulfillSalesOrder; None when it answers 204 (no return value)."""
        response = await self.transport.request("POST", self._url(name, tagged=True), json=body)
        return dict(response.json()) if response.content else None

    async def who_am_i(self) -> str:
        """The UserId of the caller: the integration's application user."""
        body = (await self.transport.request("GET", self._url("WhoAmI"))).json()
        return str(body["UserId"]).lower()

    async def aclose(self) -> None:
        await self.transport.aclose()
