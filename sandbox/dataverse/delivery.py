"""Webhook delivery: match registered steps to each Change, build the context, POST it asynchronously.

Rules: contract 8 (Webhook) service endpoints only; authtype 4 appends `?code=<authvalue>`, 5 sends the
`<settings><setting name=".." value=".."/></settings>` pairs as headers, 6 as query parameters. Over
256 KB the context is trimmed and `x-ms-dynamics-msg-size-exceeded` is sent. One more attempt only on
502/503/504; 60 s timeout. Every attempt is kept in the delivery log.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox.dataverse import context
from sandbox.dataverse.engine import Change, Organization
from sandbox.dataverse.protection import Faults
from sandbox.dataverse.store import Row
from sandbox.dataverse.values import EntityRef, iso, now

WEBHOOK_CONTRACT = 8
AUTH_WEBHOOK_KEY, AUTH_HTTP_HEADER, AUTH_QUERY_STRING = 4, 5, 6
SIZE_LIMIT = 256 * 1024
RETRY_STATUSES = {502, 503, 504}
# Deliveries in flight at once; more wait their turn here. Unbounded, a burst of changes (the soak's 50/s)
# queues hundreds of requests inside httpx's connection pool, whose bookkeeping costs grow with queued
# requests x connections on every request: the sandbox then spent its whole core there and deliveries
# timed out after 60 s (bench/soak.py). Real Dataverse also posts a bounded number of webhooks at a time.
MAX_DELIVERIES_IN_FLIGHT = 32


@dataclass
class Delivery:
    id: str
    step_id: str
    step_name: str | None
    url: str
    message: str
    entity: str
    record_id: str
    user_id: str
    trimmed: bool
    body: dict[str, Any]
    headers: dict[str, str]
    outcome: str = "pending"        # pending | delivered | failed | dropped
    attempts: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=lambda: iso(now()))

    def describe(self, with_body: bool) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "body"}
        if with_body:
            out["body"] = self.body
        return out


def parse_settings(authvalue: str) -> dict[str, str]:
    """`<settings><setting name="k" value="v" /></settings>` → {k: v}; ValueError if malformed."""
    try:
        root = ET.fromstring(authvalue)  # noqa: S314 - the value was written by the sandbox's own client
    except ET.ParseError as exc:
        raise ValueError(str(exc)) from exc
    if root.tag != "settings":
        raise ValueError("root element is not <settings>")
    pairs = {s.get("name", ""): s.get("value", "") for s in root.findall("setting")}
    if not pairs or "" in pairs:
        raise ValueError("no <setting name=.. value=..> pairs")
    return pairs


class Dispatcher:
    def __init__(self, org: Organization, faults: Faults, organization_host: str, timeout: float = 60.0,
                 retry_delay: float = 1.0, transport: httpx.AsyncBaseTransport | None = None, *,
                 primary_name_image: bool = True, zero_operation_id: bool = False) -> None:
        self.org = org
        self.primary_name_image = primary_name_image  # the readings of config.py
        self.zero_operation_id = zero_operation_id
        self.faults = faults
        self.organization_host = organization_host
        self.timeout = timeout
        self.retry_delay = retry_delay
        self.transport = transport
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(MAX_DELIVERIES_IN_FLIGHT)
        org.listeners.append(self.on_change)

    # --- matching ---------------------------------------------------------------------------------------
    def _steps_for(self, change: Change) -> list[tuple[Row, Row]]:
        store = self.org.store
        matches = []
        for step in store.all("sdkmessageprocessingstep"):
            if step.get("statecode") != 0:
                continue
            message = store.get("sdkmessage", _ref_id(step.get("sdkmessageid")))
            if message is None or message.get("name") != change.message:
                continue
            flt = store.get("sdkmessagefilter", _ref_id(step.get("sdkmessagefilterid")))
            if flt is not None and flt.get("primaryobjecttypecode") != change.logical:
                continue
            handler = step.get("eventhandler")
            endpoint = store.get("serviceendpoint", handler.id) if isinstance(handler, EntityRef) else None
            if endpoint is None or endpoint.get("contract") != WEBHOOK_CONTRACT:
                continue
            if change.message == "Update" and not _passes_filter(step, change):
                continue
            matches.append((step, endpoint))
        return matches

    def on_change(self, change: Change) -> None:
        for step, endpoint in self._steps_for(change):
            images = [i for i in self.org.store.all("sdkmessageprocessingstepimage")
                      if _ref_id(i.get("sdkmessageprocessingstepid")) == step["sdkmessageprocessingstepid"]]
            body = context.build(change, step, images, self.org.store, primary_name_image=self.primary_name_image,
                                 zero_operation_id=self.zero_operation_id)
            self._schedule(change, step, endpoint, body)

    # --- sending ----------------------------------------------------------------------------------------
    def _schedule(self, change: Change, step: Row, endpoint: Row, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "x-ms-dynamics-organization": self.organization_host,
                   "x-ms-dynamics-entity-name": change.logical, "x-ms-dynamics-request-name": change.message,
                   "x-ms-correlation-request-id": str(uuid.uuid4())}
        trimmed = len(raw) > SIZE_LIMIT
        if trimmed:
            body = context.trim(body)
            headers["x-ms-dynamics-msg-size-exceeded"] = "true"
        delivery = Delivery(str(uuid.uuid4()), step["sdkmessageprocessingstepid"], step.get("name"),
                            endpoint.get("url") or "", change.message, change.logical, change.record_id,
                            change.caller.user_id, trimmed, body, headers)
        self.deliveries.append(delivery)
        try:
            url, auth_headers = _authenticate(endpoint)
        except ValueError as exc:
            delivery.outcome = "failed"
            delivery.attempts.append({"at": iso(now()), "status": None, "error":
                                      f"0x80050203 The webhook call failed because of invalid http headers in "
                                      f"authValue: {exc}"})
            return
        delivery.url = url
        headers.update(auth_headers)
        if self.faults.take_drop():
            delivery.outcome = "dropped"
            return
        task = asyncio.get_running_loop().create_task(self._send(delivery, url, headers, json.dumps(body)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, delivery: Delivery, url: str, headers: dict[str, str], payload: str) -> None:
        if self.faults.webhook_latency_ms:
            await asyncio.sleep(self.faults.webhook_latency_ms / 1000)
        for attempt in (1, 2):
            status, error = await self._post(url, headers, payload)
            delivery.attempts.append({"at": iso(now()), "status": status, "error": error})
            if status is not None and 200 <= status < 300:
                delivery.outcome = "delivered"
                return
            if attempt == 1 and status in RETRY_STATUSES:
                await asyncio.sleep(self.retry_delay)
                continue
            break
        delivery.outcome = "failed"

    async def _post(self, url: str, headers: dict[str, str], payload: str) -> tuple[int | None, str | None]:
        async with self._slots:  # the 60 s below is the call's own, not the wait for a slot
            return await self._post_now(url, headers, payload)

    async def _post_now(self, url: str, headers: dict[str, str], payload: str) -> tuple[int | None, str | None]:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self.transport, timeout=self.timeout)
        try:
            # Dataverse's 60 s is for the whole call, so bound it as a whole (not per socket read).
            response = await asyncio.wait_for(self._client.post(url, content=payload, headers=headers),
                                              self.timeout)
        except (TimeoutError, httpx.TimeoutException):
            return None, f"timed out after {self.timeout} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None

    async def drain(self, seconds: float = 10.0) -> bool:
        """Wait until every scheduled delivery finished (for tests and the control endpoint)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _ref_id(value: Any) -> str:
    return value.id if isinstance(value, EntityRef) else ""


def _passes_filter(step: Row, change: Change) -> bool:
    listed = {a.strip().lower() for a in (step.get("filteringattributes") or "").split(",") if a.strip()}
    if not listed or change.target is None:
        return True
    return bool(listed & {k.lower() for k in change.target})


def _authenticate(endpoint: Row) -> tuple[str, dict[str, str]]:
    url = endpoint.get("url") or ""
    authtype = endpoint.get("authtype")
    authvalue = endpoint.get("authvalue") or ""
    if authtype == AUTH_WEBHOOK_KEY:
        return _with_query(url, {"code": authvalue}), {}
    if authtype == AUTH_HTTP_HEADER:
        return url, parse_settings(authvalue)
    if authtype == AUTH_QUERY_STRING:
        return _with_query(url, parse_settings(authvalue)), {}
    return url, {}


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
