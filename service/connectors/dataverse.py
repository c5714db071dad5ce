"""Dataverse Web API v9.2 client (httpx, connection-pooled, MSAL bearer tokens)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx


class Tokens(Protocol):
    async def token(self, scope: str, *, force_refresh: bool = False) -> str: ...


class DataverseError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Dataverse {status} {code}: {message}")
        self.status, self.code = status, code


class DataverseClient:
    def __init__(self, api_root: str, scope: str, tokens: Tokens, *, timeout: float = 30.0) -> None:
        self.api_root = api_root.rstrip("/")
        self.scope = scope
        self.tokens = tokens
        self.http = httpx.AsyncClient(
            timeout=timeout,
            headers={"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"},
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; a 401 is retried once with a freshly acquired token."""
        url = f"{self.api_root}/{path.lstrip('/')}"
        for attempt in (1, 2):
            token = await self.tokens.token(self.scope, force_refresh=attempt == 2)
            response = await self.http.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
            if response.status_code != 401:
                break
        if response.is_error:
            raise _error(response)
        return response

    async def who_am_i(self) -> str:
        """The UserId of the caller: the integration's application user."""
        body = (await self.request("GET", "WhoAmI")).json()
        return str(body["UserId"]).lower()

    async def aclose(self) -> None:
        await self.http.aclose()


def _error(response: httpx.Response) -> DataverseError:
    try:
        error = response.json().get("error", {})
        return DataverseError(response.status_code, str(error.get("code", "")), str(error.get("message", ""))[:500])
    except ValueError:
        return DataverseError(response.status_code, "", response.text[:200])
