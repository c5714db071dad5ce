"""BC webhook subscriptions: handshake, 3-day expiry and renewal, batched notifications, retries.

Timings are protocol seconds scaled by `clock.time_factor`, except the notification window
(`notify_delay`, real seconds: the sandbox's stand-in for BC's ~30 s) and the handshake timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from sandbox.bc.clock import Clock, iso
from sandbox.bc.entities import CUSTOM, ENTITIES, V2, EntityDef, entity_for
from sandbox.bc.errors import BCError, bad_request
from sandbox.bc.records import check_if_match
from sandbox.bc.store import make_etag
from sandbox.config import SandboxConfig

# A subscription's resource after the environment root: `api/<api>/companies(<id>)/<entity set>`.
_RESOURCE = re.compile(r"^api/(?P<api>.+?)/companies\((?P<cid>[^)/]+)\)/(?P<set>\w+)$")
# Page "Working with webhooks in Dynamics 365 Business Central": contacts and salespeoplePurchasers are not in
# its list of supported entities; BC's source rules (page 5460 "Webhook Supported Resources": a real source
# table, a single-field key) would allow both. `webhook_contacts` picks the reading.
_UNLISTED_UNLESS_CONTACTS = {"contacts", "salespeoplePurchasers"}


@dataclass
class WebhookSettings:
    notify_delay: float = 0.2  # real seconds from the first change to the POST
    collection_threshold: int = 1000
    handshake_timeout: float = 5.0
    delivery_timeout: float = 30.0
    retry_minutes: tuple[float, ...] = (1, 1, 1, 10, 100, 1000)
    max_failed_attempts: int = 5  # more failed attempts than this delete the subscription
    max_subscriptions: int = 200
    lifetime_days: float = 3.0
    # Faults (set through /_sandbox/faults)
    drop: bool = False
    handshake_delay: float = 0.0


@dataclass
class Subscription:
    id: str
    notification_url: str
    resource: str  # verbatim as posted
    api: str
    entity: str
    base: str  # `http://<host>/v2.0/<tenant>/<env>/api` of the subscribing request: absolute resource URLs
    client_state: str
    expires: datetime
    modified: datetime
    etag: str
    version: int = 1
    # Pending changes of the current window: (record id, changeType, time)
    pending: list[tuple[str, str, datetime]] = field(default_factory=list)
    window_start: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "@odata.etag": self.etag, "subscriptionId": self.id, "notificationUrl": self.notification_url,
            "resource": self.resource, "userId": "00000000-0000-0000-0000-000000000001",
            "lastModifiedDateTime": iso(self.modified), "clientState": self.client_state,
            "expirationDateTime": iso(self.expires),
        }


class Webhooks:
    def __init__(self, clock: Clock, config: SandboxConfig, settings: WebhookSettings) -> None:
        self.clock = clock
        self.config = config
        self.company_id = config.company_id.lower()
        self.settings = settings
        self.subs: dict[str, Subscription] = {}
        self.deliveries: list[dict[str, Any]] = []  # every handshake and notification attempt
        self._scheduled: set[str] = set()  # notificationUrls with a window open
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self.client = httpx.AsyncClient()

    # ---- subscriptions -----------------------------------------------------------------------
    def supported(self, entity: EntityDef) -> bool:
        """Listed in webhookSupportedResources (page 5460): a page over a real table with a single-field key,
        so never line sets (whose changes notify their header) nor contactsInformation (temporary table)."""
        if not entity.subscribable or (entity.api == CUSTOM and not self.config.custom_api):
            return False
        return entity.name not in _UNLISTED_UNLESS_CONTACTS or self.config.webhook_contacts

    def supported_resources(self) -> list[str]:
        # Page 5460 GetResourceUri: '<version>/<entity set>' for standard APIs,
        # '<publisher>/<group>/<version>/<entity set>' for custom ones.
        return [f"{e.api}/{e.name}" for e in ENTITIES.values() if self.supported(e)]

    def _parse_resource(self, resource: str, api: str, base: str) -> EntityDef:
        """The entity set a subscription's `resource` names. Page "Working with webhooks in Dynamics 365
        Business Central" posts "/api/v2.0/companies(<id>)/customers"; "subscriptions resource type" says
        relative and absolute URLs are supported. For a custom API "both the URL you send the subscription
        HTTP request to and the resource path ... must include <APIPublisher>/<APIGroup>/<APIVersion>", so the
        resource's API must be the endpoint's. BC's own text for a refused resource is unverified (issue
        MicrosoftDocs/dynamics365smb-devitpro-pb#2915 paraphrases it as "did not exist")."""
        path = resource.strip()
        parts = urlsplit(path)
        if parts.scheme in ("http", "https"):
            root = f"/v2.0/{self.config.tenant_id}/{self.config.environment}/".lower()
            own = {urlsplit(base).netloc.lower(), f"127.0.0.1:{self.config.bc_port}",
                   f"localhost:{self.config.bc_port}"}
            path = parts.path[len(root):] if (parts.path.lower().startswith(root) and not parts.query
                                              and parts.netloc.lower() in own) else ""
        elif path.startswith("/"):
            path = path[1:]
        match = _RESOURCE.match(path)
        entity = entity_for(match.group("api"), match.group("set")) if match else None
        if match is None or entity is None or entity.api != api or not self.supported(entity):
            raise bad_request(f"The resource '{resource}' is not supported for subscriptions at this endpoint.",
                              "BadRequest_ResourceNotFound")
        if match.group("cid").strip("'").lower() != self.company_id:
            raise BCError(404, "Internal_CompanyNotFound", "The company does not exist.")
        return entity

    async def create(self, body: dict[str, Any], api: str = V2, base: str = "") -> Subscription:
        self.expire()
        url, resource = str(body.get("notificationUrl") or ""), str(body.get("resource") or "")
        if not url.startswith(("http://", "https://")) or not resource:
            raise bad_request("The fields notificationUrl and resource must have a value.")
        entity = self._parse_resource(resource, api, base)
        if len(self.subs) >= self.settings.max_subscriptions:
            raise bad_request(f"You have reached the maximum number of subscriptions "
                              f"({self.settings.max_subscriptions}).", "BadRequest_SubscriptionLimit")
        await self.handshake(url)
        now = self.clock.now()
        sub_id = uuid.uuid4().hex
        sub = Subscription(sub_id, url, resource, entity.api, entity.name, base,
                           str(body.get("clientState") or ""), self._expiry(now), now, make_etag(sub_id, 1))
        self.subs[sub_id] = sub
        return sub

    def get(self, sub_id: str) -> Subscription:
        self.expire()
        sub = self.subs.get(sub_id.strip("'"))
        if sub is None:
            raise BCError(404, "BadRequest_NotFound", f"The subscription '{sub_id}' does not exist.")
        return sub

    async def renew(self, sub_id: str, body: dict[str, Any], if_match: str | None) -> Subscription:
        sub = self.get(sub_id)
        _check(sub, if_match)
        url = str(body.get("notificationUrl") or sub.notification_url)
        await self.handshake(url)
        now = self.clock.now()
        sub.notification_url = url
        sub.client_state = str(body.get("clientState", sub.client_state) or "")
        sub.expires, sub.modified = self._expiry(now), now
        sub.version += 1
        sub.etag = make_etag(sub.id, sub.version)
        return sub

    def delete(self, sub_id: str, if_match: str | None) -> None:
        sub = self.get(sub_id)
        _check(sub, if_match)
        del self.subs[sub.id]

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.clock.scaled(self.settings.lifetime_days * 86400))

    def expire(self) -> list[str]:
        now = self.clock.now()
        gone = [s.id for s in self.subs.values() if s.expires <= now]
        for sub_id in gone:
            del self.subs[sub_id]
        return gone

    async def handshake(self, url: str) -> None:
        token = secrets.token_urlsafe(24)
        target = url + ("&" if "?" in url else "?") + "validationToken=" + quote(token)
        outcome: str
        try:
            async with asyncio.timeout(self.settings.handshake_timeout):
                if self.settings.handshake_delay:
                    await asyncio.sleep(self.settings.handshake_delay)
                response = await self.client.post(target, timeout=self.settings.handshake_timeout)
            ok = response.status_code == 200 and response.text == token
            outcome = str(response.status_code)
        except (TimeoutError, httpx.HTTPError) as exc:
            ok, outcome = False, type(exc).__name__
        self._record("handshake", url, outcome, 1, [], None)
        if not ok:
            raise bad_request(
                f"The subscription could not be created: the notification URL '{url}' did not return "
                f"the validation token within {self.settings.handshake_timeout:g} seconds ({outcome}).",
                "BadRequest_ValidationFailed",
            )

    # ---- change tracking ---------------------------------------------------------------------
    def on_change(self, entity: EntityDef, row_id: str, change: str, when: datetime) -> None:
        for sub in self.subs.values():
            if sub.entity != entity.name or sub.api != entity.api:
                continue
            if sub.window_start is None:
                # codeunit "API Webhook Notification Send".GetEntityCollectionUrl: "Subtract 50 milliseconds to
                # be sure we get all the changes" from the first change's time.
                sub.window_start = when - timedelta(milliseconds=50)
            # Codeunit 6154 "API Webhook Notification Send" (MergeIntoExistingUpdatedAggregateNotification) merges an
            # update into the entry before it when that is an update of the same record, and the merged entry takes
            # the *last* change's time (BC's tests TestSequentialUpdatesAggregated / ...NonSequential...NotAggregated).
            # Created/deleted never merge. BC stamps the entry with CurrentDateTime in the database trigger, a little
            # before the record's SystemModifiedAt; `when` here is the row's modified time itself, the boundary case
            # for a reader that compares it with the lastModifiedDateTime a write answered (docs/echoes.md).
            last = sub.pending[-1] if sub.pending else None
            if last and last[0] == row_id and last[1] == change == "updated":
                sub.pending[-1] = (row_id, change, when)  # repeated updates are merged
            else:
                sub.pending.append((row_id, change, when))
            self._schedule(sub.notification_url)

    def _schedule(self, url: str) -> None:
        if url in self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (plain unit use): call flush() by hand
        self._scheduled.add(url)
        self._timers.add(loop.call_later(self.settings.notify_delay, self._spawn_flush, url))

    def _spawn_flush(self, url: str) -> None:
        task = asyncio.ensure_future(self.flush(url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _prefixes(self, sub: Subscription) -> tuple[str, str]:
        """The notification `resource` before "(<key>)" and before "?$filter=" (`notification_resource`):
        - as-subscribed: codeunit "API Webhook Notification Send" (GetSingleEntityUrl '%1(%2)',
          GetEntityCollectionUrl) starts both with the subscription's stored resource URL, verbatim;
        - relative: the sample of page "Working with webhooks in Dynamics 365 Business Central": entities as
          "api/v2.0/companies(<c>)/customers(<id>)", its collection example with a leading slash;
        - absolute: this environment's full URL (BC's own tests store GetUrl(CLIENTTYPE::Api, …))."""
        style = self.config.notification_resource
        if style == "as-subscribed":
            return sub.resource, sub.resource
        relative = f"api/{sub.api}/companies({self.company_id})/{sub.entity}"
        if style == "relative":
            return relative, "/" + relative
        absolute = f"{sub.base}/{relative[len('api/'):]}"
        return absolute, absolute

    def _entries(self, sub: Subscription) -> list[dict[str, Any]]:
        base = {"subscriptionId": sub.id, "clientState": sub.client_state,
                "expirationDateTime": iso(sub.expires)}
        single, collection = self._prefixes(sub)
        pending, start = sub.pending, sub.window_start
        sub.pending, sub.window_start = [], None
        if len(pending) > self.settings.collection_threshold:
            if not any(change == "deleted" for _, change, _ in pending):
                assert start is not None
                collection += "?$filter=lastModifiedDateTime%20gt%20" + iso(start)
            latest = max(when for _, _, when in pending)
            return [{**base, "resource": collection, "changeType": "collection",
                     "lastModifiedDateTime": iso(latest)}]
        # Every key is a SystemId GUID (ODataKeyFields = SystemId): written bare.
        return [{**base, "resource": f"{single}({row_id})", "changeType": change,
                 "lastModifiedDateTime": iso(when)} for row_id, change, when in pending]

    async def flush(self, url: str) -> None:
        """Close the window of `url`: one POST for all its subscriptions, retried as BC does."""
        self._scheduled.discard(url)
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()}
        self.expire()
        subs = [s for s in self.subs.values() if s.notification_url == url and s.pending]
        entries = [entry for sub in subs for entry in self._entries(sub)]
        if entries:
            await self.deliver(url, {"value": entries}, [s.id for s in subs])

    async def deliver(self, url: str, payload: dict[str, Any], sub_ids: list[str]) -> None:
        failed = 0
        while True:
            if self.settings.drop:
                self._record("notification", url, "dropped", failed + 1, sub_ids, payload)
                return
            headers = {"Content-Type": "application/json", "clientRequestId": str(uuid.uuid4()),
                       "x-ms-correlation-id": str(uuid.uuid4())}
            try:
                response = await self.client.post(url, json=payload, headers=headers,
                                                  timeout=self.settings.delivery_timeout)
                status: int | None = response.status_code
            except httpx.HTTPError:
                status = None
            self._record("notification", url, str(status or "no answer"), failed + 1, sub_ids, payload)
            if status is not None and 200 <= status < 300:
                return
            if status is not None and status not in (408, 429) and status < 500:
                self._drop_subs(sub_ids, f"status {status}")
                return
            failed += 1
            if failed > self.settings.max_failed_attempts or failed > len(self.settings.retry_minutes):
                self._drop_subs(sub_ids, f"{failed} failed attempts")
                return
            await asyncio.sleep(self.clock.scaled(self.settings.retry_minutes[failed - 1] * 60))
            if not any(s in self.subs for s in sub_ids):
                return

    def _drop_subs(self, sub_ids: list[str], reason: str) -> None:
        for sub_id in sub_ids:
            sub = self.subs.pop(sub_id, None)
            if sub is not None:
                self._record("deleted", sub.notification_url, reason, 0, [sub_id], None)

    def _record(self, kind: str, url: str, outcome: str, attempt: int, sub_ids: list[str],
                payload: dict[str, Any] | None) -> None:
        self.deliveries.append({"time": iso(self.clock.now()), "kind": kind, "url": url,
                                "outcome": outcome, "attempt": attempt, "subscriptionIds": sub_ids,
                                "body": payload})
        del self.deliveries[:-2000]

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.aclose()

    def pending_count(self) -> int:
        return sum(len(s.pending) for s in self.subs.values())


def _check(sub: Subscription, if_match: str | None) -> None:
    check_if_match(sub.etag, if_match, required=True)
