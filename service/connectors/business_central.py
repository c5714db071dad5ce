"""Business Central API client: standard API v2.0, the custom bcsync API, webhook subscriptions.

URLs: `{service_root}/api/{api}/companies({company})/{entity_set}`; `api` is "v2.0" or a custom API's
"<publisher>/<group>/<version>". Keys are unquoted GUIDs; subscription ids are quoted strings.

Option (enum) values: API v2.0 writes an enum value as its member name, XML-encoded into an OData identifier:
the blank member is `"_x0020_"` (`customers.blocked`, page 30009 "APIV2 - Customers", enum 139 "Customer
Blocked"), "In Review" is `"In_x0020_Review"` (`salesInvoices.status`, enum 5477), "Non-Inventory"
`"Non_x002D_Inventory"`. Every record read through this client has such values decoded (`""` for the blank
one), so that filters, hashes, conflict checks and mapped values see one spelling, whichever BC writes
(older schema versions wrote captions). A value is decoded only when it is identifier-shaped (letters, digits,
`_`) and holds an `_xHHHH_` sequence: free text with spaces or punctuation is left alone.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.bc_metadata import decode_name
from service.connectors.budget import RequestBudget
from service.connectors.http import ApiError, ApiTransport, Tokens, odata_params, with_query

V2 = "v2.0"
_ENCODED_OPTION = re.compile(r"^\w*_x[0-9A-Fa-f]{4}_\w*$")
_CUSTOM_RESOURCE = re.compile(r"^/?api/(?P<api>[^/]+/[^/]+/v[\d.]+)/")


@dataclass(frozen=True)
class BatchRequest:
    """One operation of a JSON `$batch`. `url`: absolute (`record_url`, `collection_url`) or relative to the
    batch's API root; `if_match`: the ETag a PATCH or DELETE is sent with (None: no If-Match header)."""

    id: str
    method: str
    url: str
    body: dict[str, Any] | None = None
    if_match: str | None = None

    def as_json(self) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", **({"If-Match": self.if_match} if self.if_match else {})}
        return {"id": self.id, "method": self.method, "url": self.url, "headers": headers,
                **({"body": self.body} if self.body is not None else {})}


@dataclass(frozen=True)
class BatchResponse:
    """One operation's answer: its status, and its body (a record, with option values decoded as every read of
    this client; or `{"error": {...}}`)."""

    id: str
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def rolled_back(self) -> bool:
        """424 Failed Dependency: not applied because another operation of the atomic batch failed."""
        return self.status == 424

    def error(self) -> ApiError:
        error = (self.body or {}).get("error", {}) if isinstance(self.body, dict) else {}
        return ApiError(self.status, str(error.get("code", "")), str(error.get("message", ""))[:500], system="BC")


class BatchFailed(ApiError):
    """An operation of a `$batch` failed. Status, code and message are those of the operation that failed (not of
    one only rolled back with it, 424); `operation` is its id, `responses` every answer. With `Isolation:
    snapshot` nothing of the batch was applied."""

    def __init__(self, failed: BatchResponse, responses: builtins.list[BatchResponse]) -> None:
        error = failed.error()
        super().__init__(error.status, error.code, error.message, system="BC")
        self.operation = failed.id
        self.responses = responses


class BusinessCentralClient:
    def __init__(self, service_root: str, company_id: str, scope: str, tokens: Tokens, budget: RequestBudget, *,
                 timeout: float = 30.0, max_concurrency: int = 5, max_attempts: int = 6) -> None:
        self.service_root = service_root.rstrip("/")
        self.company_id = company_id
        self.budget = budget
        self.transport = ApiTransport("BC", scope, tokens, budget, timeout=timeout, max_attempts=max_attempts,
                                      max_concurrency=max_concurrency)

    # ---- URLs ----------------------------------------------------------------------------------
    def api_root(self, api: str = V2) -> str:
        return f"{self.service_root}/api/{api.strip('/')}"

    def collection_url(self, entity_set: str, api: str = V2) -> str:
        return f"{self.api_root(api)}/companies({self.company_id})/{entity_set}"

    def record_url(self, entity_set: str, record_id: str, api: str = V2) -> str:
        return f"{self.collection_url(entity_set, api)}({record_id})"

    # ---- records -------------------------------------------------------------------------------
    async def list(self, entity_set: str, *, api: str = V2, filter: str | None = None,
                   select: builtins.list[str] | None = None, page_size: int = 1000,
                   orderby: str | None = None) -> AsyncIterator[dict[str, Any]]:
        params = odata_params(filter=filter, select=select, orderby=orderby)
        # BC pages hold at most 20,000 rows.
        async for row in self.transport.pages(self.collection_url(entity_set, api), params, min(page_size, 20000)):
            yield plain_options(row)

    async def get(self, entity_set: str, record_id: str, *, api: str = V2,
                  expand: str | None = None) -> dict[str, Any] | None:
        url = with_query(self.record_url(entity_set, record_id, api), odata_params(expand=expand))
        response = await self.transport.request("GET", url, allow=frozenset({404}))
        return None if response.status_code == 404 else plain_options(response.json())

    async def create(self, entity_set: str, body: dict[str, Any], *, api: str = V2) -> dict[str, Any]:
        response = await self.transport.request("POST", self.collection_url(entity_set, api), json=body)
        return plain_options(response.json())

    async def update(self, entity_set: str, record_id: str, body: dict[str, Any], etag: str, *,
                     api: str = V2) -> dict[str, Any]:
        response = await self.transport.request("PATCH", self.record_url(entity_set, record_id, api), json=body,
                                                headers={"If-Match": etag})
        return plain_options(response.json())

    async def delete(self, entity_set: str, record_id: str, etag: str = "*", *, api: str = V2) -> bool:
        response = await self.transport.request("DELETE", self.record_url(entity_set, record_id, api),
                                                headers={"If-Match": etag}, allow=frozenset({404}))
        return response.status_code != 404

    async def batch(self, requests: Sequence[BatchRequest], *, isolation: str | None = "snapshot", api: str = V2,
                    check: bool = True) -> builtins.list[BatchResponse]:
        """Send operations as one JSON `$batch` (`POST {api root}/$batch`, body `{"requests": [{id, method, url,
        headers, body}]}`, answered `{"responses": [{id, status, headers, body}]}`, at most 100 operations);
        Microsoft Learn, "Using OData transactional $batch requests" (business-central/dev-itpro/webservices/
        use-odata-batch): with the `Isolation: snapshot` header the whole batch runs in one session and one
        transaction, so an operation that fails undoes every earlier one of the batch (the sandbox answers the
        others 424 Failed Dependency, sandbox/bc/batch.py). Without it BC stops at the first failure and answers
        only the operations up to it. The HTTP status of the batch itself says only that it could be read.

        The answers in BC's order. `check`: a failed operation raises BatchFailed (the first that failed on its
        own, not one rolled back with it); else the caller reads each answer's `ok`/`error()`."""
        if not requests:
            return []
        response = await self.transport.request("POST", f"{self.api_root(api)}/$batch",
                                                json={"requests": [r.as_json() for r in requests]},
                                                headers={"Isolation": isolation} if isolation else {})
        answers = [BatchResponse(str(a.get("id") or ""), int(a.get("status") or 0),
                                 _batch_body(a.get("body")), dict(a.get("headers") or {}))
                   for a in response.json().get("responses") or []]
        failed = [a for a in answers if not a.ok]
        if check and failed:
            raise BatchFailed(next((a for a in failed if not a.rolled_back), failed[0]), answers)
        return answers

    async def bound_action(self, entity_set: str, record_id: str, action: str) -> None:
        await self.transport.request("POST", f"{self.record_url(entity_set, record_id)}/Microsoft.NAV.{action}")

    async def companies(self) -> builtins.list[dict[str, Any]]:
        response = await self.transport.request("GET", f"{self.api_root()}/companies")
        return list(response.json().get("value", []))

    async def metadata(self, api: str = V2) -> bytes:
        """The API route's CSDL document (`<route>/$metadata`, "Developing connect apps"); NotFound when the
        route is not installed."""
        response = await self.transport.request("GET", f"{self.api_root(api)}/$metadata",
                                                headers={"Accept": "application/xml"})
        return response.content

    async def webhook_supported_resources(self) -> builtins.list[str]:
        """What this environment can notify, as `v2.0/customers` or `<publisher>/<group>/<version>/<set>`
        (page 5460 "Webhook Supported Resources", at api/microsoft/runtime/beta)."""
        url = f"{self.api_root('microsoft/runtime/beta')}/companies({self.company_id})/webhookSupportedResources"
        rows = [row async for row in self.transport.pages(url, {}, 1000)]
        return [str(row.get("resource") or "") for row in rows if row.get("resource")]

    # ---- webhook subscriptions -----------------------------------------------------------------
    def _subscriptions_url(self, resource: str = "") -> str:
        # BC's docs: a custom API's resource is subscribed at that API's own subscriptions endpoint.
        match = _CUSTOM_RESOURCE.match(resource)
        return f"{self.api_root(match.group('api') if match else V2)}/subscriptions"

    async def list_subscriptions(self, *, api: str = V2) -> builtins.list[dict[str, Any]]:
        """`api`: a custom API's subscriptions may only show at that API's endpoint (BC's docs)."""
        response = await self.transport.request("GET", f"{self.api_root(api)}/subscriptions")
        return list(response.json().get("value", []))

    async def create_subscription(self, notification_url: str, resource: str, client_state: str) -> dict[str, Any]:
        body = {"notificationUrl": notification_url, "resource": resource, "clientState": client_state}
        response = await self.transport.request("POST", self._subscriptions_url(resource), json=body)
        return dict(response.json())

    async def renew_subscription(self, subscription: dict[str, Any]) -> dict[str, Any]:
        """PATCH with the same three fields; BC runs the handshake again and moves the expiry 3 days on."""
        resource = str(subscription["resource"])
        body = {"notificationUrl": subscription["notificationUrl"], "resource": resource,
                "clientState": subscription.get("clientState", "")}
        url = f"{self._subscriptions_url(resource)}('{subscription['subscriptionId']}')"
        response = await self.transport.request("PATCH", url, json=body,
                                                headers={"If-Match": subscription.get("@odata.etag") or "*"})
        return dict(response.json())

    async def delete_subscription(self, subscription_id: str, *, resource: str = "") -> None:
        """`resource` (optional) picks the custom API's endpoint for a custom API's subscription."""
        await self.transport.request("DELETE", f"{self._subscriptions_url(resource)}('{subscription_id}')",
                                     headers={"If-Match": "*"}, allow=frozenset({404}))

    async def aclose(self) -> None:
        await self.transport.aclose()


def _batch_body(body: Any) -> Any:
    return plain_options(body) if isinstance(body, dict) and "error" not in body else body


def plain_options(record: Any) -> dict[str, Any]:
    """The record with its encoded option values decoded (`"_x0020_"` → `""`), in nested lines too."""
    return {key: _plain(value) for key, value in dict(record).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, str) and _ENCODED_OPTION.match(value):
        return decode_name(value).strip()
    if isinstance(value, list):
        return [plain_options(item) if isinstance(item, dict) else _plain(item) for item in value]
    if isinstance(value, dict):
        return plain_options(value)
    return value
