"""Couplings, the sync job log, the error list and dead letters."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated, Any

from aio_pika.abc import AbstractIncomingMessage
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME, DATAVERSE_SETS
from service.api.admin import require_admin
from service.api.admin_mappings import known
from service.api.deps import BrokerDep, DatabaseDep
from service.api.models_records import CouplingOut, MatchReport, RetryAllResult, SyncErrorOut, SyncJobOut
from service.broker import Broker
from service.logging import get_logger
from service.matching import REPORT_IDS, match_and_couple
from service.store import couplings, synclog
from service.store.models import SyncError
from service.topology import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    FAILING_SINCE_HEADER,
    MAPPING_HEADER,
    TRANSIENT_HEADER,
    Topology,
)

log = get_logger(__name__)
router = APIRouter(prefix="/admin", tags=["admin: records"], dependencies=[Depends(require_admin)])
# Row ids are 32-bit integers in the store (PostgreSQL `integer`): larger ones are invalid input, not a 500.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
After = Annotated[int, Query(ge=0, le=2**31 - 1)]
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class NewCoupling(BaseModel):
    """Two existing records to couple by hand."""

    model_config = ConfigDict(extra="forbid")

    mapping: str = Field(max_length=64, description="a mapping's name, e.g. CUSTOMER")
    bc_id: str = Field(pattern=GUID, description="the Business Central record's id")
    dataverse_id: str = Field(pattern=GUID, description="the Dataverse record's id")
    sync_from: str | None = Field(default=None, pattern=r"^(bc|dataverse)$",
                                  description="synchronize the pair right after, from this side")


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mapping: str = Field(max_length=64, description="a mapping's name, e.g. CUSTOMER")
    create_missing: bool = Field(default=False, description="queue the unmatched records to be created on the "
                                                            "other side")


def _clients(request: Request) -> tuple[Any, Any]:
    bc, dv = getattr(request.app.state, "bc", None), getattr(request.app.state, "dv", None)
    if bc is None or dv is None:
        raise HTTPException(503, "the Business Central and Dataverse connections are not configured")
    return bc, dv


async def _requeue(broker: Broker, mapping: str, event_json: str) -> None:
    if not broker.ready:
        raise HTTPException(503, "RabbitMQ is not reachable right now; try again")
    await broker.publish("", broker.topology.mapping_queue(mapping), event_json.encode(),
                         message_id=f"admin-{mapping}", correlation_id="admin")


def _event(mapping: str, source: str, record_id: str) -> str:
    """A change event that makes the worker synchronize one record of a mapping now."""
    m = BY_NAME[mapping]
    entity = m.bc_entity if source == "business_central" else m.dataverse_entity
    return ChangeEvent(source=source, entity=entity, record_id=record_id, change_type="updated",
                       occurred_at=datetime.now(UTC), dedupe_key=f"admin:{mapping}:{record_id}",
                       correlation_id="admin").model_dump_json()


# --- couplings -----------------------------------------------------------------------------------------------

@router.get("/couplings", response_model=list[CouplingOut], responses={404: {}})
async def list_couplings(db: DatabaseDep, mapping: Annotated[str, Query(max_length=64)],
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100, after: After = 0) -> list[CouplingOut]:
    """Couplings of a mapping, oldest first; page with `after=<last id>`."""
    known(mapping)
    async with db.session() as session:
        rows = await couplings.list_for(session, mapping, limit=limit, after_id=after)
    return [CouplingOut.model_validate(row.model_dump()) for row in rows]


@router.post("/couplings", status_code=201, response_model=CouplingOut, responses={400: {}, 404: {}, 409: {}, 502: {}})
async def couple(body: NewCoupling, request: Request, db: DatabaseDep, broker: BrokerDep) -> CouplingOut:
    """Couple two existing records by hand (e.g. a Sales user with a BC salesperson)."""
    mapping = BY_NAME[known(body.mapping)]
    bc, dv = _clients(request)
    if await bc.get(mapping.bc_entity, body.bc_id, api=mapping.bc_api) is None:
        raise HTTPException(404, f"no {mapping.bc_entity} {body.bc_id} in Business Central")
    if await dv.get(DATAVERSE_SETS[mapping.dataverse_entity], body.dataverse_id) is None:
        raise HTTPException(404, f"no {mapping.dataverse_entity} {body.dataverse_id} in Dynamics 365 Sales")
    async with db.session() as session:
        for side, record_id in (("bc", body.bc_id), ("dataverse", body.dataverse_id)):
            if await couplings.find(session, mapping.name, side, record_id) is not None:
                raise HTTPException(409, f"{side} record {record_id} is already coupled in {mapping.name}")
        row = await couplings.save(session, mapping.name, body.bc_id, body.dataverse_id, last_result="coupled by hand")
        await couplings.forget_decoupled(session, mapping.name, "bc", body.bc_id)
        await couplings.forget_decoupled(session, mapping.name, "dataverse", body.dataverse_id)
    log.info("coupled by hand", mapping=mapping.name, bc_id=body.bc_id, dataverse_id=body.dataverse_id)
    if body.sync_from:
        source = "business_central" if body.sync_from == "bc" else "dataverse"
        await _requeue(broker, mapping.name, _event(mapping.name, source,
                                                    body.bc_id if body.sync_from == "bc" else body.dataverse_id))
    return CouplingOut.model_validate(row.model_dump())


@router.delete("/couplings/{coupling_id}", status_code=204, responses={404: {}})
async def decouple(coupling_id: RowId, db: DatabaseDep) -> None:
    """Remove a coupling; both records stay as they are."""
    async with db.session() as session:
        if await couplings.find_by_id(session, coupling_id) is None:
            raise HTTPException(404, f"no coupling {coupling_id}")
        await couplings.remove(session, coupling_id)


# `queued_for_creation` is answered only with `create_missing` (unset fields are left out).
@router.post("/couplings/match", response_model=MatchReport, response_model_exclude_unset=True,
             responses={404: {}, 502: {}})
async def match(body: MatchRequest, request: Request, db: DatabaseDep, broker: BrokerDep) -> MatchReport:
    """Match-based coupling ("Generate Integration IDs"): couple records existing on both sides by the
    mapping's match keys; report coupled, ambiguous and unmatched per side. With `create_missing`, the
    unmatched records are queued so that the worker creates them on the other side."""
    mapping = BY_NAME[known(body.mapping)]
    bc, dv = _clients(request)
    report = await match_and_couple(mapping, bc, dv, db)
    if body.create_missing:
        for record_id in report["unmatched_bc_ids"]:
            await _requeue(broker, mapping.name, _event(mapping.name, "business_central", record_id))
        for record_id in report["unmatched_dataverse_ids"]:
            await _requeue(broker, mapping.name, _event(mapping.name, "dataverse", record_id))
        report["queued_for_creation"] = len(report["unmatched_bc_ids"]) + len(report["unmatched_dataverse_ids"])
    for key in ("unmatched_bc_ids", "unmatched_dataverse_ids"):
        report[key] = report[key][:REPORT_IDS]  # the counts say how many there are
    return MatchReport.model_validate(report)


# --- job log and errors --------------------------------------------------------------------------------------

@router.get("/sync-log", response_model=list[SyncJobOut], responses={404: {}})
async def sync_log(db: DatabaseDep, mapping: Annotated[str | None, Query(max_length=64)] = None,
                   kind: Annotated[str | None, Query(pattern=r"^(live|reconcile|full)$")] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[SyncJobOut]:
    """Job log entries (per mapping, direction and run; live events per hour) with their counters."""
    if mapping:
        known(mapping)
    async with db.session() as session:
        return [SyncJobOut.model_validate(job.model_dump()) for job in
                await synclog.list_jobs(session, mapping, kind, limit)]


def _error_view(error: SyncError) -> SyncErrorOut:
    return SyncErrorOut.model_validate({**error.model_dump(exclude={"event"}), "retryable": error.event is not None})


@router.get("/errors", response_model=list[SyncErrorOut], responses={404: {}})
async def errors(db: DatabaseDep, mapping: Annotated[str | None, Query(max_length=64)] = None,
                 state: Annotated[str | None, Query(pattern=r"^(open|skipped|resolved|dismissed)$")] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100, after: After = 0) -> list[SyncErrorOut]:
    """The error list: records that could not be synchronized, why, how often, since when. Records that
    failed twice the same way are `skipped` (not tried again until retried here)."""
    if mapping:
        known(mapping)
    async with db.session() as session:
        return [_error_view(e) for e in await synclog.list_errors(session, mapping, state, limit, after)]


async def _retry(db: DatabaseDep, broker: Broker, error: SyncError) -> bool:
    if error.event is None:
        return False
    error.state = "open"
    error.attempts = 0
    await _requeue(broker, error.mapping, error.event)
    return True


@router.post("/errors/{error_id}/retry", response_model=SyncErrorOut, responses={404: {}, 409: {}})
async def retry(error_id: RowId, db: DatabaseDep, broker: BrokerDep) -> SyncErrorOut:
    """Try the record again now (a skipped record is restored)."""
    async with db.session() as session:
        error = await session.get(SyncError, error_id)
        if error is None:
            raise HTTPException(404, f"no error {error_id}")
        if not await _retry(db, broker, error):
            raise HTTPException(409, "this error has no event to retry; run a full synchronization of the mapping")
        return _error_view(error)


@router.post("/errors/retry-all", response_model=RetryAllResult)
async def retry_all(db: DatabaseDep, broker: BrokerDep,
                    mapping: Annotated[str | None, Query(max_length=64)] = None) -> RetryAllResult:
    """Retry every open and skipped error (of one mapping, or all)."""
    retried = 0
    async with db.session() as session:
        for error in await synclog.list_errors(session, mapping, None, 10_000):
            retried += await _retry(db, broker, error)
    return RetryAllResult(retried=retried)


@router.delete("/errors/{error_id}", status_code=204, responses={404: {}})
async def dismiss(error_id: RowId, db: DatabaseDep) -> None:
    """Dismiss an error: it leaves the list (the record is tried again on its next change)."""
    async with db.session() as session:
        error = await session.get(SyncError, error_id)
        if error is None:
            raise HTTPException(404, f"no error {error_id}")
        error.state = "dismissed"


# --- dead letters --------------------------------------------------------------------------------------------

REDRIVE_SKIPPED_HEADER = "bcsync-redrive-skipped"  # on a dead letter the re-drive kept: why it could not be placed
# Headers that only describe the dead-lettering or the worker's last round: a re-driven event starts afresh.
_SPENT_HEADERS = (ERROR_HEADER, TRANSIENT_HEADER, FAILING_SINCE_HEADER, REDRIVE_SKIPPED_HEADER)
# The broker's per-queue delivery counters (quorum queues): they describe the dead-letter queue, not the event.
_QUEUE_COUNTERS = ("x-delivery-count", "x-acquired-count")
NO_MAPPING = "no_mapping"  # nothing in the message names a mapping
UNKNOWN_MAPPING = "unknown_mapping"  # it names a mapping this release does not have


class RedriveResult(BaseModel):
    redriven: int = Field(description="dead letters put back on their mapping's queue")
    kept: int = Field(description="dead letters that name no known mapping: left at the end of the dead-letter "
                                  f"queue with a `{REDRIVE_SKIPPED_HEADER}` header saying why")
    kept_reasons: dict[str, int] = Field(description=f"kept dead letters by reason ({NO_MAPPING}, {UNKNOWN_MAPPING})")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _death_queues(headers: dict[str, Any]) -> list[str]:
    """The queues a message was dead-lettered from, the latest first: the `x-death` entries (newest first,
    RabbitMQ's order), then `x-last-death-queue` (3.13+) and `x-first-death-queue`. Source: RabbitMQ's
    "Dead Letter Exchanges" guide, section "Dead-Lettered Messages" (https://www.rabbitmq.com/docs/dlx); the
    3.10.8 form was checked on a real delivery-limit dead letter (tests/integration/test_redrive.py)."""
    deaths = headers.get("x-death")
    queues = [_text(d.get("queue")) for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []
    queues += [_text(headers.get("x-last-death-queue")), _text(headers.get("x-first-death-queue"))]
    return [q for q in queues if q]


def dead_letter_mapping(headers: dict[str, Any], routing_key: str | None, topology: Topology) -> tuple[str | None, str]:
    """The mapping a dead letter belongs to, or None and why not (`no_mapping`, `unknown_mapping: <name>`).
    In order: the `bcsync-mapping` header (the worker's dead letters, and retries); the mapping queue it was
    dead-lettered from (`x-death`: a quorum queue past its delivery limit — those carry no header of ours);
    the routing key (the worker dead-letters with the mapping's name, the api publishes to the queue's name)."""
    prefix = topology.mapping_queue("")
    claims: list[str] = []  # the mapping names the message itself states
    header = _text(headers.get(MAPPING_HEADER))
    if header:
        claims.append(header)
    claims += [queue.removeprefix(prefix) for queue in _death_queues(headers) if queue.startswith(prefix)]
    if routing_key and routing_key.startswith(prefix):
        claims.append(routing_key.removeprefix(prefix))
    for name in [*claims, routing_key or ""]:  # a routing key such as `dataverse.account` states nothing
        if name in BY_NAME:
            return name, ""
    return (None, f"{UNKNOWN_MAPPING}: {claims[0][:64]}") if claims else (None, NO_MAPPING)


async def _move(broker: Broker, message: AbstractIncomingMessage, mapping: str | None, why: str) -> None:
    """Publish a dead letter to its mapping's queue, afresh; or, when it has none, to the end of the
    dead-letter queue with the reason. Returns once the broker confirmed it."""
    topology, headers = broker.topology, dict(message.headers)
    if mapping is not None:
        target = topology.mapping_queue(mapping)
        headers = {k: v for k, v in headers.items() if not k.startswith("x-") and k not in _SPENT_HEADERS}
        headers.update({MAPPING_HEADER: mapping, ATTEMPT_HEADER: 0})
    else:
        target = topology.dead_queue  # through the default exchange: nothing else bound to `<ns>.dead` gets it
        headers = {k: v for k, v in headers.items() if k not in _QUEUE_COUNTERS}
        headers[REDRIVE_SKIPPED_HEADER] = why
    await broker.publish("", target, message.body, message_id=message.message_id or "",
                         correlation_id=message.correlation_id or "", headers=headers)


@router.post("/dead-letters/redrive", response_model=RedriveResult, responses={503: {}})
async def redrive_dead_letters(broker: BrokerDep, limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
                               ) -> RedriveResult:
    """Put dead-lettered events back on their mapping's queue (after the cause was fixed). Looks at the
    messages in the dead-letter queue when called (at most `limit`), in order. One that names no known
    mapping is kept: published again at the end of the dead-letter queue with a `bcsync-redrive-skipped`
    header saying why, and counted in `kept_reasons`; the ones behind it are re-driven all the same. Every
    move is confirmed by the broker before the message is taken off the dead-letter queue; nothing is
    rejected back to it (on RabbitMQ 4 each return counts toward a quorum queue's delivery limit)."""
    connection = broker.connection
    if not broker.ready or connection is None:
        raise HTTPException(503, "RabbitMQ is not reachable right now; try again")
    result = RedriveResult(redriven=0, kept=0, kept_reasons={})
    # A channel of its own: should a move fail, closing it puts the message it holds back in the queue.
    channel = await connection.channel()
    try:
        # (robust=False: a robust channel would answer a repeated passive declare from its cache, count and all)
        queue = await channel.declare_queue(broker.topology.dead_queue, passive=True, robust=False)
        waiting = queue.declaration_result.message_count or 0  # what is there now: kept ones go behind it
        for _ in range(min(waiting, limit)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            mapping, why = dead_letter_mapping(message.headers, message.routing_key, broker.topology)
            await _move(broker, message, mapping, why)
            await message.ack()
            if mapping is not None:
                result.redriven += 1
                continue
            reason = why.split(":", 1)[0]
            result.kept += 1
            result.kept_reasons[reason] = result.kept_reasons.get(reason, 0) + 1
            log.warning("dead letter kept: it names no known mapping", reason=why, routing_key=message.routing_key,
                        death_queues=_death_queues(message.headers)[:3], message_id=message.message_id,
                        correlation_id=message.correlation_id)
    except Exception as exc:
        log.error("dead-letter re-drive stopped", error=f"{type(exc).__name__}: {str(exc)[:200]}",
                  redriven=result.redriven, kept=result.kept)
        raise HTTPException(503, f"RabbitMQ did not complete a move ({type(exc).__name__}); re-driven "
                                 f"{result.redriven} and kept {result.kept} so far; the message being moved stays "
                                 "in the dead-letter queue; try again") from exc
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    log.info("dead letters re-driven", redriven=result.redriven, kept=result.kept, kept_reasons=result.kept_reasons)
    return result
