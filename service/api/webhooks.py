"""The two webhook doors: Dataverse (service endpoint, WebhookKey/HttpHeader) and Business Central.

Both verify, validate, drop what nobody needs, store the events in the outbox (deduplicated) and only
then answer 202. A 202 is a promise: the event is in the database before the answer leaves. Business
Central deletes every subscription at its URL on any 4xx but 408/429, so its door answers 503 for an
internal failure and 202 for a body it cannot (fully) use, which a catch-up covers (bc_notifications.py,
bc_intake.py).

Both bound the store round trip: events not committed within `webhook_store_timeout_seconds` (a database
that hangs) or not even let into the intake queue (`IntakeFull`: too many events already wait) are answered
503 at once, never 202. The unit of work that ran out of time goes on in the background, bounded by the
database timeout: one transaction, so it either rolls back whole or commits whole events; events that commit
after their 503 are not lost, and the sender's retry carries the same dedupe keys, so it stores nothing twice.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from schemas.dataverse import RemoteExecutionContext
from schemas.events import ChangeEvent
from schemas.mappings import mappings_for
from service.api.bc_intake import BcIntake, BcIntakeDep, catch_up_for
from service.api.bc_notifications import Reading, read_notifications
from service.api.body import BodyTooLarge, read_bounded_body
from service.api.deps import SettingsDep, secret_matches
from service.identity import IntegrationIdentity
from service.intake import dataverse_event, is_integration_echo
from service.intake_writer import IntakeFull, IntakeWriter
from service.logging import get_logger
from service.metrics import WEBHOOK_ENTRIES_DROPPED, WEBHOOK_REQUESTS
from service.relay import OutboxRelay
from service.settings import Settings

log = get_logger(__name__)
Payload = TypeVar("Payload", bound=BaseModel)
Result = TypeVar("Result")
router = APIRouter(prefix="/webhooks", tags=["webhooks"])

# The webhook key, in either form Dataverse sends it (declared in the OpenAPI document; compared by us).
_KEY_QUERY = APIKeyQuery(name="code", auto_error=False, scheme_name="webhookKeyQuery")
_KEY_HEADER = APIKeyHeader(name="x-bcsync-webhook-key", auto_error=False, scheme_name="webhookKeyHeader")

# What a validationToken may hold: echoing anything else back could reflect markup into a page.
_HANDSHAKE_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/=:]{1,1024}$")


_COUNTERS: dict[tuple[str, str], Counter] = {}  # the labelled children, looked up once (not per request)


def _answer(source: str, outcome: str, status: int, detail: str, **extra: object) -> JSONResponse:
    counter = _COUNTERS.get((source, outcome))
    if counter is None:
        counter = _COUNTERS[source, outcome] = WEBHOOK_REQUESTS.labels(source, outcome)
    counter.inc()
    level = log.info if status < 400 else log.warning
    level("webhook answered", source=source, outcome=outcome, status=status, detail=detail, **extra)
    return JSONResponse({"outcome": outcome, "detail": detail, **extra}, status_code=status)


class StoreTimeout(Exception):
    """The events were not committed within the bound (they may still commit: a retry is a duplicate)."""


LATE: set[asyncio.Task[Any]] = set()  # stores whose request was answered 503 for time and that still run


def _late_done(task: asyncio.Task[Any]) -> None:
    LATE.discard(task)
    error = None if task.cancelled() else task.exception()
    if error is None and not task.cancelled():
        log.info("events stored after their request was answered 503; the retry is a duplicate")
    else:
        log.info("a store answered 503 for time failed too", error=f"{type(error).__name__}: {error}"[:300])


async def within(seconds: float, work: Coroutine[Any, Any, Result]) -> Result:
    """`work`'s result if it ends within `seconds`; else `StoreTimeout` at once, and the work goes on in the
    background (not cancelled: cancelling a database call midway is no quicker than its own timeout, and what
    it commits is kept; the intake writer writes a batch whole anyway)."""
    task = asyncio.ensure_future(work)
    # One future and one timer (asyncio.wait builds sets and callbacks for the general case: per request here).
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
        if not task.done():  # out of time (or the request itself cancelled): keep it until it ends
            LATE.add(task)
            task.add_done_callback(_late_done)
    if task.done():
        return task.result()
    raise StoreTimeout(f"not stored within {seconds:g} s")


def _unavailable(source: str, exc: Exception, what: str) -> JSONResponse:
    """The 503 of a store that failed, hangs or is full (never a 202: nothing is known to be committed)."""
    if isinstance(exc, IntakeFull):
        log.warning("intake queue full", source=source, error=str(exc))
        return _answer(source, "unavailable", 503, f"too many events wait for the store; {what} not stored, try again")
    log.error("event store unavailable", source=source, error=f"{type(exc).__name__}: {exc}"[:300])
    return _answer(source, "unavailable", 503, f"{what} could not be stored; try again")


async def _accept(source: str, writer: IntakeWriter, relay: OutboxRelay, events: list[ChangeEvent],
                  ignored: int, bound: float) -> Response:
    try:
        stored = await within(bound, writer.store(events))
    except Exception as exc:
        return _unavailable(source, exc, "the event")
    if stored:
        relay.kick()
    return _answer(
        source, "accepted", 202, "stored", events=len(events), new=stored, duplicates=len(events) - stored,
        ignored=ignored,
    )


def _body(model: str, required: bool) -> dict[str, Any]:
    """The OpenAPI request body of a door (read by the door itself; see service/api/openapi.py)."""
    schema = {"$ref": f"#/components/schemas/{model}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


# The door reads its headers and the process's objects itself rather than through FastAPI's dependencies:
# solving them cost as much per request as validating the body. Declared here for the OpenAPI document only.
_DATAVERSE_HEADERS = [
    {"name": "x-ms-dynamics-msg-size-exceeded", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "x-ms-correlation-request-id", "in": "header", "required": False,
     "schema": {"type": "string", "maxLength": 128}},
]


@router.post("/dataverse", status_code=202, responses={200: {}, 400: {}, 401: {}, 413: {}, 503: {}},
             openapi_extra=_body("RemoteExecutionContext", required=True) | {"parameters": _DATAVERSE_HEADERS})
async def dataverse_webhook(
    request: Request,
    code: Annotated[str | None, Depends(_KEY_QUERY)] = None,
    x_bcsync_webhook_key: Annotated[str | None, Depends(_KEY_HEADER)] = None,
) -> Response:
    """A Dataverse webhook: the JSON RemoteExecutionContext of one Create, Update or Delete."""
    source = "dataverse"
    state = request.app.state
    settings: Settings = state.settings
    headers = request.headers
    correlation_id = headers.get("x-ms-correlation-request-id")
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id or uuid.uuid4().hex)
    expected = settings.dataverse_webhook_key.get_secret_value() if settings.dataverse_webhook_key else None
    if not secret_matches(code or x_bcsync_webhook_key, expected):
        return _answer(source, "unauthorized", 401, "missing or wrong webhook key")
    if correlation_id is not None and len(correlation_id) > 128:
        return _answer(source, "invalid", 400, "x-ms-correlation-request-id: over 128 characters")
    context = await _read(request, source, RemoteExecutionContext, "a RemoteExecutionContext")
    if isinstance(context, Response):
        return context
    entity = context.primary_entity_name
    if not mappings_for(source, entity):
        return _answer(source, "ignored", 200, f"no mapping uses the table {entity!r}")
    identity: IntegrationIdentity = state.identity
    if is_integration_echo(context, identity.user_id, identity.tag):
        return _answer(source, "ignored", 200, "the integration's own change", entity=entity)
    try:
        event = dataverse_event(
            context, trimmed="x-ms-dynamics-msg-size-exceeded" in headers, correlation_id=correlation_id,
        )
    except ValidationError as exc:
        return _answer(source, "invalid", 400, "not a usable change: " + _first_error(exc))
    return await _accept(source, state.writer, state.relay, [event], ignored=0,
                         bound=settings.webhook_store_timeout_seconds)


_HANDSHAKE = {"description": "The handshake: exactly the validationToken",
              "content": {"text/plain": {"schema": {"type": "string"}}}}
_BATCH_ANSWER = ("Every usable notification stored; what could not be used is counted in `dropped` and caught "
                 "up (outcome `invalid`: no notification carries our clientState, nothing stored)")


@router.get("/business-central", status_code=200, response_class=PlainTextResponse,
            responses={200: _HANDSHAKE, 400: {}}, operation_id="business_central_handshake")
@router.post("/business-central", status_code=202,
             # 400 is the handshake's (a malformed validationToken): a batch never gets a 400 or a 413.
             responses={200: _HANDSHAKE, 202: {"description": _BATCH_ANSWER}, 400: {}, 401: {}, 503: {}},
             openapi_extra=_body("NotificationBatch", required=False), operation_id="business_central_webhook")
async def business_central_webhook(
    request: Request, settings: SettingsDep, intake: BcIntakeDep,
    validation_token: Annotated[str | None, Query(alias="validationToken", max_length=4096)] = None,
    x_ms_correlation_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Business Central: the subscription handshake (`?validationToken=`), or a batch of notifications.

    A batch is read as it streams in and never refused for its size or for an entry it cannot use (BC would
    delete every subscription at this URL): each usable entry is stored, the others are counted, logged and
    covered by a catch-up of their entity sets. `401` when an entry carries another clientState; `503` when
    the store fails; `202` otherwise (`invalid` when no entry carries our clientState: nothing is stored)."""
    source = "business_central"
    # Cut, not refused: BC deletes a subscription that answers 4xx, so an odd header must not cost it.
    correlation_id = (x_ms_correlation_id or uuid.uuid4().hex)[:128]
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    if validation_token is not None:
        if not _HANDSHAKE_TOKEN.fullmatch(validation_token):
            return _answer(source, "invalid", 400, "malformed validationToken")
        WEBHOOK_REQUESTS.labels(source, "handshake").inc()
        log.info("webhook handshake answered", source=source)
        return PlainTextResponse(validation_token, headers={"X-Content-Type-Options": "nosniff"})
    if request.method == "GET":
        return _answer(source, "invalid", 400, "GET is only for the validationToken handshake")
    return await _notifications(request, settings, intake, correlation_id)


async def _notifications(request: Request, settings: Settings, intake: BcIntake, correlation_id: str) -> Response:
    source = "business_central"
    try:
        expected = settings.bc_client_state.get_secret_value() if settings.bc_client_state else None
        reading = await read_notifications(request.stream(), expected, correlation_id)
        if reading.wrong_client_state:
            return _answer(source, "unauthorized", 401, "wrong clientState")
        counts = {"events": 0, "new": 0, "duplicates": 0, "ignored": 0, "dropped": reading.dropped_total}
        if not reading.authenticated:  # garbage or someone else's: it may cause nothing (no catch-up either)
            log.warning("business central body without a notification of ours", bytes=reading.body_bytes,
                        by_reason=dict(reading.dropped), reasons=reading.reasons)
            return _answer(source, "invalid", 202, "no notification carries our clientState; nothing stored",
                           **counts)
        company = (settings.bc_company_id or "").lower()
        catch_up = catch_up_for(reading, company)
        if reading.dropped:
            _note_drops(source, reading, catch_up)
        wanted = [
            e for e in reading.events
            if mappings_for(source, e.entity) and (not company or e.company_id == company)
        ]
        counts |= {"events": len(wanted), "ignored": len(reading.events) - len(wanted)}
        if not wanted and not catch_up:
            return _answer(source, "ignored", 202, "no mapping uses these resources", **counts)
    except Exception as exc:
        log.exception("business central webhook failed", error=str(exc)[:300])
        return _answer(source, "unavailable", 503, "internal error; try again")
    try:
        stored = await within(settings.webhook_store_timeout_seconds, intake.store(wanted, catch_up))
    except Exception as exc:
        return _unavailable(source, exc, "the events")
    counts |= {"new": stored, "duplicates": len(wanted) - stored}
    detail = "stored" + (f"; catch-up requested for {', '.join(catch_up)}" if catch_up else "")
    return _answer(source, "accepted", 202, detail, **counts)


def _note_drops(source: str, reading: Reading, catch_up: list[str]) -> None:
    """One warning line per request, and the counter (only for authenticated requests: garbage from anyone
    is not a loss)."""
    for reason, count in reading.dropped.items():
        WEBHOOK_ENTRIES_DROPPED.labels(source, reason).inc(count)
    log.warning("business central entries dropped", dropped=reading.dropped_total, by_reason=dict(reading.dropped),
                reasons=reading.reasons, kept=len(reading.events), bytes=reading.body_bytes, catch_up=catch_up)


async def _read(request: Request, source: str, model: type[Payload], what: str) -> Payload | Response:
    """The body, size-bounded and validated; or the 413/400 answer to give instead."""
    try:
        body = await read_bounded_body(request)
    except BodyTooLarge as exc:
        return _answer(source, "invalid", 413, str(exc.detail))
    except ClientDisconnect:  # logged by the BodyLimit middleware; nobody is left to read an answer
        return _answer(source, "invalid", 400, "the client left before sending its whole body")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        return _answer(source, "invalid", 400, f"not {what}: " + _first_error(exc))


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"[:300] if where else str(error["msg"])[:300]
