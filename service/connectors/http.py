"""What both API clients share: bearer tokens, the request budget, retries, and errors.

Retry policy (the same for Business Central and Dataverse, which document the same behaviour):
- 401: the token may have been revoked or expired early; fetch a fresh one once and retry.
- 429, 502, 503, 504: the service asks us to back off; honour `Retry-After` (seconds or an HTTP date),
  and pause the whole budget so that the other coroutines do not hammer the service meanwhile.
- other 5xx, timeouts, connection errors: exponential back-off with full jitter.
- anything else (4xx) is the caller's business: raised at once as an `ApiError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urljoin, urlsplit

import httpx

from service.connectors.budget import RequestBudget
from service.logging import get_logger, redact_text

log = get_logger(__name__)

THROTTLED = frozenset({429, 502, 503, 504})  # statuses that may carry Retry-After
MAX_RETRY_AFTER = 300.0  # seconds: the cap on a server's Retry-After
MAX_WAIT_IN_REQUEST = 60.0  # longer waits end the request with a transient error (the event is retried later)
# Transport errors after which the request may have reached the server (connect errors are safe).
MAYBE_DELIVERED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


class Tokens(Protocol):
    async def token(self, scope: str, *, force_refresh: bool = False) -> str: ...


class ApiError(Exception):
    """An answer the service could not use. `message` is the server's text (or the transport error's
    name), never a header, token or query string of ours."""

    def __init__(self, status: int, code: str, message: str, *, system: str = "API") -> None:
        message = redact_text(message)  # a server may echo what it was sent
        super().__init__(f"{system} {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def is_transient(error: BaseException | None) -> bool:
    """No answer, a timeout, throttling or a server error (after the transport's own retries): it says nothing
    about the record, and the same request may well succeed later."""
    return isinstance(error, ApiError) and (error.status == 0 or error.status in (408, 429) or error.status >= 500)


class NotFound(ApiError):
    """404: the record (or route) does not exist."""


class PreconditionFailed(ApiError):
    """The ETag sent in If-Match is stale: somebody else changed the record first."""


def error_from(response: httpx.Response, system: str) -> ApiError:
    """Both systems answer `{"error": {"code", "message"}}`."""
    code, message = "", ""
    try:
        error = response.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", ""))[:500]
    except (ValueError, AttributeError):
        message = response.reason_phrase
    status = response.status_code
    if status == 404:
        return NotFound(status, code, message, system=system)
    # BC signals a stale ETag with 409 Request_EntityChanged; Dataverse (and BC, per protocol docs) with 412.
    if status == 412 or (status == 409 and code == "Request_EntityChanged"):
        return PreconditionFailed(status, code, message, system=system)
    return ApiError(status, code, message, system=system)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable.
    Capped at MAX_RETRY_AFTER: a server (or anything between) that says "in a day" must not stop a system's
    whole budget for a day; the longest waits documented for service protection are minutes."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER)


# The id of the sync run a request belongs to, sent with each request so that the other system's logs can be
# matched to the record history's entry. Business Central logs `client-request-id` in its web service telemetry
# (Learn: "Web Service Telemetry" / "Analyzing Incoming Web Services Request Telemetry"); Dataverse's clients send
# `x-ms-client-request-id` (microsoft/PowerPlatform-DataverseClient-Python). An extra header is harmless to both.
RUN_ID: ContextVar[str | None] = ContextVar("bcsync_run_id", default=None)
_RUN_ID_HEADERS = {"BC": "client-request-id", "Dataverse": "x-ms-client-request-id"}


class ApiTransport:
    """One pooled httpx client per system, with the retry policy above."""

    # Back-off of 5xx and transport errors: full jitter over base * 2**(attempt-1), capped. Class
    # attributes so that tests can shrink them.
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __init__(self, system: str, scope: str, tokens: Tokens, budget: RequestBudget | None, *,
                 timeout: float, max_attempts: int, max_concurrency: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.system = system
        self.scope = scope
        self.tokens = tokens
        self.budget = budget
        self.max_attempts = max(1, max_attempts)
        limits = httpx.Limits(max_connections=max_concurrency or 100, max_keepalive_connections=max_concurrency or 20)
        self.http = httpx.AsyncClient(timeout=timeout, limits=limits,
                                      headers={"Accept": "application/json", **(headers or {})})
        # BC serves 5 requests per user at a time and queues the rest server-side, where they count
        # against its timeout; queueing here instead keeps the budget timestamps honest.
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))  # noqa: S311

    async def _send_once(self, method: str, url: str, token: str, kwargs: dict[str, Any]) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token}"}
        run_id = RUN_ID.get()
        if run_id is not None and self.system in _RUN_ID_HEADERS:
            headers[_RUN_ID_HEADERS[self.system]] = run_id
        concurrency = self._slots or contextlib.nullcontext()
        # The budget place is held for the whole exchange: it counts from the answer (see budget.py).
        budget = self.budget.slot() if self.budget else contextlib.nullcontext()
        async with concurrency, budget:
            return await self.http.request(method, url, headers=headers, **kwargs)

    async def request(self, method: str, url: str, *, allow: frozenset[int] = frozenset(),
                      **kwargs: Any) -> httpx.Response:
        """Send with retries. Statuses in `allow` are returned instead of raised (e.g. 404 for get)."""
        refreshed = False
        force_refresh = False
        last: ApiError | None = None
        path = urlsplit(url).path  # logged without the query: it may carry filters with customer data
        for attempt in range(1, self.max_attempts + 1):
            token = await self.tokens.token(self.scope, force_refresh=force_refresh)
            force_refresh = False
            try:
                response = await self._send_once(method, url, token, dict(kwargs))
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = ApiError(0, type(exc).__name__, "no answer (timeout or connection error)", system=self.system)
                if method == "POST" and isinstance(exc, MAYBE_DELIVERED):
                    # The server may have acted on it: sending again could create a second record. The
                    # caller (the sync engine) re-reads and matches before it tries again.
                    raise last from None
                status, wait = 0, self._backoff(attempt)
            else:
                status = response.status_code
                if status < 400 or status in allow:
                    return response
                last = error_from(response, self.system)
                if status == 401 and not refreshed:
                    refreshed = force_refresh = True
                    log.warning("api retry", system=self.system, method=method, path=path, status=401,
                                wait=0.0, attempt=attempt)
                    continue
                if status in THROTTLED:
                    after = retry_after_seconds(response)
                    wait = self._backoff(attempt) if after is None else after
                    if after is not None and self.budget is not None:
                        self.budget.pause_until(time.monotonic() + after)
                    if wait > MAX_WAIT_IN_REQUEST:  # not inside one run: its event waits in a delay queue instead
                        raise last
                elif status >= 500:
                    wait = self._backoff(attempt)
                else:
                    raise last
            if attempt == self.max_attempts:
                break
            log.warning("api retry", system=self.system, method=method, path=path, status=status,
                        wait=round(wait, 3), attempt=attempt)
            await asyncio.sleep(wait)
        assert last is not None
        raise last

    async def pages(self, url: str, params: dict[str, str], page_size: int) -> AsyncIterator[dict[str, Any]]:
        """Every row of a collection, page by page along `@odata.nextLink` (opaque: followed verbatim)."""
        headers = {"Prefer": f"odata.maxpagesize={page_size}"}
        next_url: str | None = with_query(url, params)
        while next_url:
            response = await self.request("GET", next_url, headers=headers)
            body = response.json()
            for row in body.get("value", []):
                yield row
            link = body.get("@odata.nextLink")
            following = urljoin(next_url, link) if link else None
            if following == next_url:  # a server bug would otherwise loop forever
                raise ApiError(response.status_code, "PagingLoop", "the next link repeats the page", system=self.system)
            next_url = following

    async def aclose(self) -> None:
        await self.http.aclose()


def odata_params(*, filter: str | None = None, select: list[str] | None = None, orderby: str | None = None,
                 expand: str | None = None) -> dict[str, str]:
    params: dict[str, str] = {}
    if filter:
        params["$filter"] = filter
    if select:
        params["$select"] = ",".join(select)
    if orderby:
        params["$orderby"] = orderby
    if expand:
        params["$expand"] = expand
    return params


def with_query(url: str, params: dict[str, str]) -> str:
    """Percent-encoded (spaces as %20, not `+`, which OData servers need not read as a space)."""
    if not params:
        return url
    query = urlencode(params, quote_via=quote, safe="$,()':/")
    return f"{url}{'&' if '?' in url else '?'}{query}"
