"""Webhook registration in both systems, idempotent: run it twice and the second run changes nothing.

Business Central: one subscription per (notificationUrl, resource); renewed when it expires within 24 h
(BC deletes it after 3 days). Dataverse: one `serviceendpoint` (contract 8 Webhook) found by name, with
the HttpHeader auth type (5): Dataverse sends the key in the header `x-bcsync-webhook-key`, not in the
query string (`?code=`, WebhookKey), which proxies and ingresses write into their logs. Its `authvalue` is
`<settings><setting name="…" value="…" /></settings>` ("ServiceEndpoint table" reference: authtype 5 Http
Header; the XML form is undocumented by Microsoft, see MicrosoftDocs/powerapps-docs#1439, and is what the
Plug-in Registration tool writes). One asynchronous post-operation step per table and message, with the
images the consumers read. Only what belongs to us (our notificationUrl, our endpoint)
is ever changed or removed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from schemas.business_central import ResourceError, parse_resource
from schemas.dataverse import POST_IMAGE, PRE_IMAGE
from service.connectors.business_central import V2, BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.http import ApiError, NotFound
from service.logging import get_logger

log = get_logger(__name__)

RENEW_WITHIN = timedelta(hours=24)
MESSAGES = ("Create", "Update", "Delete")
# Dataverse constants: serviceendpoint.contract Webhook, authtype HttpHeader, messageformat JSON;
# step stage PostOperation, mode Asynchronous; image types.
CONTRACT_WEBHOOK, AUTH_HTTP_HEADER, FORMAT_JSON = 8, 5, 2
KEY_HEADER = "x-bcsync-webhook-key"  # the header the api's Dataverse door reads
STAGE_POST_OPERATION, MODE_ASYNC = 40, 1
IMAGE_PRE, IMAGE_POST = 0, 1


@dataclass
class RegistrationReport:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)  # renewed or updated in place
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # addition: "<what>: <status> <code>" (others still done)
    refused: list[str] = field(default_factory=list)  # BC resources whose subscription BC refused (4xx): poll them

    @property
    def changed(self) -> bool:
        return bool(self.created or self.renewed or self.removed)


# ---- Business Central ------------------------------------------------------------------------------
def bc_resource(company_id: str, api: str, entity_set: str) -> str:
    """The subscription `resource` as Microsoft documents it ("Working with webhooks in Dynamics 365 Business
    Central"): `/api/v2.0/companies(<id>)/customers`; a custom API's `/api/<p>/<g>/<v>/companies(<id>)/<set>`."""
    return f"/api/{api.strip('/')}/companies({company_id})/{entity_set}"


def same_resource(resource: str) -> str:
    """One spelling of a subscription's resource, however BC writes it back (with or without the leading
    slash, relative or absolute, quoted keys): `companies(<id>)/customers` for the standard API,
    `api/<p>/<g>/<v>/companies(<id>)/<set>` for a custom one (also the keys of the keeper's stored states)."""
    try:
        parsed = parse_resource(resource)
    except ResourceError:
        return resource.strip().lstrip("/").lower().removeprefix("api/v2.0/")
    prefix = "" if parsed.api == V2 else f"api/{parsed.api}/"
    return f"{prefix}companies({parsed.company_id})/{parsed.entity_set}".lower()


def _expires_soon(subscription: dict[str, Any], now: datetime) -> bool:
    raw = str(subscription.get("expirationDateTime") or "")
    try:
        expires = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return True  # unreadable: renewing is harmless, losing the subscription is not
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires - now < RENEW_WITHIN


async def register_bc_subscriptions(bc: BusinessCentralClient, notification_url: str, client_state: str,
                                    resources: list[tuple[str, str]], *,
                                    now: datetime | None = None) -> RegistrationReport:
    """`now` (default: the clock of this machine) is what expiry times are compared with."""
    report = RegistrationReport()
    listed: dict[str, dict[str, Any]] = {}
    missing_routes: set[str] = set()
    for api in dict.fromkeys([V2, *(api for api, _ in resources)]):  # custom APIs list their own
        try:
            subscriptions = await bc.list_subscriptions(api=api)
        except NotFound:  # a custom API that is not installed: the other routes go on
            missing_routes.add(api)
            continue
        for sub in subscriptions:
            listed.setdefault(str(sub["subscriptionId"]), sub)
    for api, name in resources:
        if api in missing_routes:
            report.failed.append(f"{bc_resource(bc.company_id, api, name)}: 404 route api/{api} not installed")
    resources = [(api, name) for api, name in resources if api not in missing_routes]
    ours = [s for s in listed.values() if s.get("notificationUrl") == notification_url]
    wanted = {same_resource(bc_resource(bc.company_id, api, name)): bc_resource(bc.company_id, api, name)
              for api, name in resources}
    now = now or datetime.now(UTC)
    seen: set[str] = set()
    for sub in ours:
        key = same_resource(str(sub.get("resource", "")))
        if key not in wanted or key in seen:  # no longer wanted, or a duplicate: each one notifies twice
            await bc.delete_subscription(str(sub["subscriptionId"]), resource=str(sub.get("resource", "")))
            report.removed.append(str(sub.get("resource")))
            continue
        seen.add(key)
        # clientState is compared when BC shows it: a changed secret must reach the subscription.
        stale_state = "clientState" in sub and sub.get("clientState") != client_state
        if not (stale_state or _expires_soon(sub, now)):
            report.kept.append(wanted[key])
            continue
        try:
            await bc.renew_subscription({**sub, "clientState": client_state})
            report.renewed.append(wanted[key])
        except ApiError as exc:
            if exc.status != 404:
                report.failed.append(f"{wanted[key]}: {exc.status} {exc.code}")
                continue
            seen.discard(key)  # expired between the list and the renewal: create it below
    for key, resource in wanted.items():
        if key in seen:
            continue
        try:
            await bc.create_subscription(notification_url, resource, client_state)
            report.created.append(resource)
        except ApiError as exc:  # e.g. a resource this environment cannot notify: it is polled
            report.failed.append(f"{resource}: {exc.status} {exc.code}")
            if 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 429):
                report.refused.append(resource)
    if not (report.created or report.kept or report.renewed):
        report.refused = []  # nothing got through (a handshake that fails, BC away): that says nothing of a resource
    log.info("bc subscriptions registered", created=len(report.created), kept=len(report.kept),
             renewed=len(report.renewed), removed=len(report.removed), failed=report.failed)
    return report


# ---- Dataverse -------------------------------------------------------------------------------------
def key_fingerprint(name: str, key: str) -> str:
    """Dataverse never returns `authvalue`; a slow salted hash in the description tells whether the key
    changed without storing anything that reveals it."""
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), f"bcsync-webhook:{name}".encode(), 100_000)
    return digest.hex()[:32]


def _quote(value: str) -> str:
    return value.replace("'", "''")


def header_auth_value(key: str) -> str:
    """The `authvalue` of an HttpHeader endpoint: our one header, XML-escaped."""
    def attribute(value: str) -> str:
        return '"' + escape(value, {'"': "&quot;"}) + '"'

    return f"<settings><setting name={attribute(KEY_HEADER)} value={attribute(key)} /></settings>"


async def _endpoint(dv: DataverseClient, url: str, key: str, name: str, report: RegistrationReport) -> str:
    description = f"bcsync webhook; key fingerprint {key_fingerprint(name, key)}"
    wanted = {"name": name, "url": url, "contract": CONTRACT_WEBHOOK, "authtype": AUTH_HTTP_HEADER,
              "messageformat": FORMAT_JSON, "description": description}
    found = [e async for e in dv.list("serviceendpoints", filter=f"name eq '{_quote(name)}'")]
    if not found:
        created = await dv.create("serviceendpoints", {**wanted, "authvalue": header_auth_value(key)})
        report.created.append(f"serviceendpoint {name}")
        return str(created["serviceendpointid"])
    endpoint = found[0]
    endpoint_id = str(endpoint["serviceendpointid"])
    if any(endpoint.get(k) != v for k, v in wanted.items()):
        await dv.update("serviceendpoints", endpoint_id, {**wanted, "authvalue": header_auth_value(key)},
                        endpoint.get("@odata.etag"))
        report.renewed.append(f"serviceendpoint {name}")
    else:
        report.kept.append(f"serviceendpoint {name}")
    return endpoint_id


def _attributes(value: str | None) -> str:
    return ",".join(sorted({a.strip().lower() for a in (value or "").split(",") if a.strip()}))


async def _lookup_id(dv: DataverseClient, entity_set: str, filter: str, column: str) -> str:
    rows = [r async for r in dv.list(entity_set, filter=filter, select=[column])]
    if not rows:
        raise LookupError(f"no {entity_set} row where {filter}")
    return str(rows[0][column])


def _step_differs(step: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for column, value in wanted.items():
        if column == "filteringattributes":
            if _attributes(step.get(column)) != (value or ""):
                return True
        elif step.get(column) != value:
            return True
    return False


async def _images(dv: DataverseClient, step_id: str, message: str, label: str, report: RegistrationReport) -> None:
    wanted = {"Update": [(POST_IMAGE, IMAGE_POST)], "Delete": [(PRE_IMAGE, IMAGE_PRE)]}.get(message, [])
    existing = [i async for i in dv.list("sdkmessageprocessingstepimages",
                                         filter=f"_sdkmessageprocessingstepid_value eq {step_id}")]
    for image in existing:
        if (image.get("entityalias"), image.get("imagetype")) in wanted and not image.get("attributes"):
            wanted.remove((image["entityalias"], image["imagetype"]))
            report.kept.append(f"image {image['entityalias']} of {label}")
        else:
            await dv.delete("sdkmessageprocessingstepimages", str(image["sdkmessageprocessingstepimageid"]))
            report.removed.append(f"image {image.get('entityalias')} of {label}")
    for alias, image_type in wanted:
        # No `attributes`: the image holds every column.
        await dv.create("sdkmessageprocessingstepimages", {
            "name": alias, "entityalias": alias, "imagetype": image_type, "messagepropertyname": "Target",
            "sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({step_id})"})
        report.created.append(f"image {alias} of {label}")


async def register_dataverse_webhook(dv: DataverseClient, url: str, key: str,
                                     steps: list[tuple[str, str, list[str] | None]],
                                     name: str = "bcsync") -> RegistrationReport:
    report = RegistrationReport()
    for _, message, _ in steps:
        if message not in MESSAGES:
            raise ValueError(f"unsupported message {message!r}: one of {', '.join(MESSAGES)}")
    endpoint_id = await _endpoint(dv, url, key, name, report)
    existing = [s async for s in dv.list("sdkmessageprocessingsteps", filter=f"_eventhandler_value eq {endpoint_id}")]
    message_ids = {m: await _lookup_id(dv, "sdkmessages", f"name eq '{m}'", "sdkmessageid")
                   for m in {message for _, message, _ in steps}}
    kept_ids: set[str] = set()
    for table, message, filtering in steps:
        label = f"step {message} of {table}"
        filter_id = await _lookup_id(
            dv, "sdkmessagefilters",
            f"primaryobjecttypecode eq '{_quote(table)}' and _sdkmessageid_value eq {message_ids[message]}",
            "sdkmessagefilterid")
        attributes = _attributes(",".join(filtering)) if message == "Update" and filtering else ""
        wanted: dict[str, Any] = {
            "name": f"{name}: {message} of {table}", "stage": STAGE_POST_OPERATION, "mode": MODE_ASYNC,
            "rank": 1, "supporteddeployment": 0, "asyncautodelete": True,
            # Only Update takes filtering attributes; null means "any column".
            "filteringattributes": attributes or None,
        }
        match = next((s for s in existing if str(s.get("_sdkmessagefilterid_value")) == filter_id
                      and str(s.get("sdkmessageprocessingstepid")) not in kept_ids), None)
        if match is None:
            created = await dv.create("sdkmessageprocessingsteps", {
                **wanted, "sdkmessageid@odata.bind": f"/sdkmessages({message_ids[message]})",
                "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id})",
                "eventhandler@odata.bind": f"/serviceendpoints({endpoint_id})"})
            step_id = str(created["sdkmessageprocessingstepid"])
            report.created.append(label)
        else:
            step_id = str(match["sdkmessageprocessingstepid"])
            if _step_differs(match, wanted) or match.get("statecode", 0) != 0:
                await dv.update("sdkmessageprocessingsteps", step_id,
                                {**wanted, "statecode": 0, "statuscode": 1}, match.get("@odata.etag"))
                report.renewed.append(label)
            else:
                report.kept.append(label)
        kept_ids.add(step_id)
        await _images(dv, step_id, message, label, report)
    for step in existing:  # steps of our endpoint that no (table, message) asks for any more
        if str(step["sdkmessageprocessingstepid"]) not in kept_ids:
            await dv.delete("sdkmessageprocessingsteps", str(step["sdkmessageprocessingstepid"]))
            report.removed.append(f"step {step.get('name')}")
    log.info("dataverse webhook registered", created=len(report.created), kept=len(report.kept),
             renewed=len(report.renewed), removed=len(report.removed))
    return report
