"""Couplings, the sync job log, the error list and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME, DATAVERSE_SETS
from service.api.admin import require_admin
from service.api.admin_mappings import known
from service.api.deps import BrokerDep, DatabaseDep
from service.broker import Broker
from service.logging import get_logger
from service.matching import REPORT_IDS, match_and_couple
from service.store import couplings, synclog
from service.store.models import SyncError
from service.topology import MAPPING_HEADER

log = get_logger(__name__)
router = APIRouter(prefix="/admin", tags=["admin: records"], dependencies=[Depends(require_admin)])
# Row ids are 32-bit integers in the store (PostgreSQL `integer`): larger ones are invalid input, not a 500.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
After = Annotated[int, Query(ge=0, le=2**31 - 1)]
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class NewCoupling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mapping: str = Field(max_length=64)
    bc_id: str = Field(pattern=GUID)
    dataverse_id: str = Field(pattern=GUID)
    sync_from: str | None = Field(default=None, pattern=r"^(bc|dataverse)$")  # synchronize right after


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mapping: str = Field(max_length=64)
    create_missing: bool = False


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

@router.get("/couplings", responses={404: {}})
async def list_couplings(db: DatabaseDep, mapping: Annotated[str, Query(max_length=64)],
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100, after: After = 0) -> list[dict[str, Any]]:
    """Couplings of a mapping, oldest first; page with `after=<last id>`."""
    known(mapping)
    async with db.session() as session:
        rows = await couplings.list_for(session, mapping, limit=limit, after_id=after)
    return [row.model_dump() for row in rows]


@router.post("/couplings", status_code=201, responses={400: {}, 404: {}, 409: {}, 502: {}})
async def couple(body: NewCoupling, request: Request, db: DatabaseDep, broker: BrokerDep) -> dict[str, Any]:
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
    return row.model_dump()


@router.delete("/couplings/{coupling_id}", status_code=204, responses={404: {}})
async def decouple(coupling_id: RowId, db: DatabaseDep) -> None:
    """Remove a coupling; both records stay as they are."""
    async with db.session() as session:
        if await couplings.find_by_id(session, coupling_id) is None:
            raise HTTPException(404, f"no coupling {coupling_id}")
        await couplings.remove(session, coupling_id)


@router.post("/couplings/match", responses={404: {}, 502: {}})
async def match(body: MatchRequest, request: Request, db: DatabaseDep, broker: BrokerDep) -> dict[str, Any]:
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
    return report


# --- job log and errors --------------------------------------------------------------------------------------

@router.get("/sync-log", responses={404: {}})
async def sync_log(db: DatabaseDep, mapping: Annotated[str | None, Query(max_length=64)] = None,
                   kind: Annotated[str | None, Query(pattern=r"^(live|reconcile|full)$")] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """Job log entries (per mapping, direction and run; live events per hour) with their counters."""
    if mapping:
        known(mapping)
    async with db.session() as session:
        return [job.model_dump() for job in await synclog.list_jobs(session, mapping, kind, limit)]


def _error_view(error: SyncError) -> dict[str, Any]:
    view = error.model_dump(exclude={"event"})
    view["retryable"] = error.event is not None
    return view


@router.get("/errors", responses={404: {}})
async def errors(db: DatabaseDep, mapping: Annotated[str | None, Query(max_length=64)] = None,
                 state: Annotated[str | None, Query(pattern=r"^(open|skipped|resolved|dismissed)$")] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100, after: After = 0) -> list[dict[str, Any]]:
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


@router.post("/errors/{error_id}/retry", responses={404: {}, 409: {}})
async def retry(error_id: RowId, db: DatabaseDep, broker: BrokerDep) -> dict[str, Any]:
    """Try the record again now (a skipped record is restored)."""
    async with db.session() as session:
        error = await session.get(SyncError, error_id)
        if error is None:
            raise HTTPException(404, f"no error {error_id}")
        if not await _retry(db, broker, error):
            raise HTTPException(409, "this error has no event to retry; run a full synchronization of the mapping")
        return _error_view(error)


@router.post("/errors/retry-all")
async def retry_all(db: DatabaseDep, broker: BrokerDep,
                    mapping: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, int]:
    """Retry every open and skipped error (of one mapping, or all)."""
    retried = 0
    async with db.session() as session:
        for error in await synclog.list_errors(session, mapping, None, 10_000):
            retried += await _retry(db, broker, error)
    return {"retried": retried}


@router.delete("/errors/{error_id}", status_code=204, responses={404: {}})
async def dismiss(error_id: RowId, db: DatabaseDep) -> None:
    """Dismiss an error: it leaves the list (the record is tried again on its next change)."""
    async with db.session() as session:
        error = await session.get(SyncError, error_id)
        if error is None:
            raise HTTPException(404, f"no error {error_id}")
        error.state = "dismissed"


@router.post("/dead-letters/redrive")
async def redrive_dead_letters(broker: BrokerDep, limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
                               ) -> dict[str, int]:
    """Put dead-lettered events back on their mapping's queue (after the cause was fixed)."""
    if not broker.ready or broker.channel is None:
        raise HTTPException(503, "RabbitMQ is not reachable right now; try again")
    queue = await broker.channel.get_queue(broker.topology.dead_queue, ensure=False)
    moved = 0
    while moved < limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
        mapping = str(message.headers.get(MAPPING_HEADER, ""))
        if mapping not in BY_NAME:
            await message.reject(requeue=True)
            break
        await broker.publish("", broker.topology.mapping_queue(mapping), message.body,
                             message_id=message.message_id or "", correlation_id=message.correlation_id or "")
        await message.ack()
        moved += 1
    return {"redriven": moved}
