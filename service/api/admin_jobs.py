"""Admin endpoints of the background jobs: full synchronization (review, start, restart a line), the
webhook registrations (state, refresh now) and catch-up (state, run now).

The api only writes runs and requests into the store and sends a control message on `<ns>.jobs`; the
workers do the work (consumers/jobs). The subscription refresh is the exception: it runs the keeper's
pass here (service code), under the same lease as the workers' keeper.

Recommendations (as BC's "Full Synch. Review"), from counts that cost one request per side
(`$top=1&$count=true`, with the mapping's filter; Dataverse counts stop at 5,000) and the couplings:
- "No records": neither side has records that take part;
- "Couple records": both sides have records and the couplings cover less than half of the smaller side —
  couple by match first (`POST /admin/couplings/match`); running the full synchronization is safe too,
  since it matches before it creates;
- "Full Synch.": otherwise (one side only, mostly coupled already, or a count could not be read).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

import aio_pika
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from schemas.mappings import BY_NAME, DATAVERSE_SETS, TableMapping
from service.api.admin import require_admin
from service.api.admin_mappings import MappingName
from service.api.deps import BrokerDep, DatabaseDep, SettingsDep
from service.api.models_jobs import (
    CatchUpRequest,
    CatchUpRequested,
    CatchUpState,
    CatchUpStates,
    FullSyncRequest,
    FullSyncRestarted,
    FullSyncRunOut,
    FullSyncStarted,
    FullSyncStatus,
    ReconcileJobList,
    ReconcileJobOut,
    ReviewLine,
    Subscriptions,
    SubscriptionsRefresh,
)
from service.broker import Broker
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.http import with_query
from service.logging import get_logger
from service.store import jobs, locks, mapping_configs, reconciles
from service.store.outbox import utcnow
from service.subscriptions import KeeperBusy, keep, keeper_lease

log = get_logger(__name__)

router = APIRouter(prefix="/admin", tags=["admin: jobs"], dependencies=[Depends(require_admin)])

NO_RECORDS, COUPLE, FULL = "No records", "Couple records", "Full Synch."
KEEPER_WAIT_SECONDS = 10.0


# ---- helpers ----------------------------------------------------------------------------------------------------


def recommend(bc_records: int | None, dataverse_records: int | None, couplings: int) -> str:
    if bc_records is None or dataverse_records is None:
        return FULL
    if bc_records == 0 and dataverse_records == 0:
        return NO_RECORDS
    if bc_records and dataverse_records and couplings * 2 < min(bc_records, dataverse_records):
        return COUPLE
    return FULL


async def _count(client: Any, url: str, filter_: str | None) -> int | None:
    params = {"$top": "1", "$count": "true", **({"$filter": filter_} if filter_ else {})}
    try:
        body = (await client.transport.request("GET", with_query(url, params))).json()
    except Exception as exc:
        log.warning("could not count records", url=url, error=str(exc)[:200])
        return None
    count = body.get("@odata.count")
    return int(count) if isinstance(count, int) else len(body.get("value", []))


async def review_line(request: Request, mapping: TableMapping, couplings: int) -> ReviewLine:
    bc: BusinessCentralClient | None = getattr(request.app.state, "bc", None)
    dv: DataverseClient | None = getattr(request.app.state, "dv", None)
    bc_count = dv_count = None
    if bc is not None and dv is not None:
        bc_count, dv_count = await asyncio.gather(
            _count(bc, bc.collection_url(mapping.bc_entity, mapping.bc_api), mapping.bc_filter),
            _count(dv, f"{dv.api_root}/{DATAVERSE_SETS[mapping.dataverse_entity]}", mapping.dataverse_filter))
    return ReviewLine(mapping=mapping.name, direction=mapping.direction.value,
                      depends_on=[d for d in mapping.depends_on if d in jobs.full_sync_mappings()],
                      couplings=couplings, bc_records=bc_count, dataverse_records=dv_count,
                      recommendation=recommend(bc_count, dv_count, couplings))


async def review(request: Request, db: Any, names: list[str]) -> list[ReviewLine]:
    async with db.session() as session:
        coupled = {name: await jobs.count_couplings(session, name) for name in names}
    return list(await asyncio.gather(*(review_line(request, BY_NAME[n], coupled[n]) for n in names)))


async def kick(broker: Broker, kind: str) -> None:
    """Wake the workers' job of this kind (best effort: they poll the store anyway)."""
    if not broker.ready or broker.channel is None:
        return
    try:
        exchange = await broker.channel.declare_exchange(jobs.control_exchange(broker.topology.namespace),
                                                         aio_pika.ExchangeType.FANOUT, durable=False,
                                                         auto_delete=True)
        await exchange.publish(aio_pika.Message(json.dumps({"kind": kind}).encode()), routing_key="",
                               mandatory=False)
    except Exception as exc:
        log.warning("control message not sent", kind=kind, error=str(exc)[:200])


def chosen_mappings(names: list[str] | None, covered: list[str]) -> list[str]:
    """The `mappings` of a body (a non-empty list of names, checked by its model) out of `covered`, in their
    order there; all of them when absent."""
    if names is None:
        return covered
    for name in names:
        if name not in BY_NAME:
            raise HTTPException(404, f"unknown mapping {name!r}; mappings: {', '.join(BY_NAME)}")
        if name not in covered:
            raise HTTPException(400, f"{name} has no field mappings to synchronize in full; full synchronization "
                                     f"covers: {', '.join(covered)}")
    return [n for n in covered if n in set(names)]


async def unavailable_mappings(db: Any) -> dict[str, str]:
    """The mappings setup keeps off, with why (a full synchronization leaves them out)."""
    async with db.session() as session:
        rows = await mapping_configs.all_configs(session)
    return {name: row.unavailable for name, row in rows.items() if row.unavailable}


def known_mapping(name: str) -> str:
    if name not in BY_NAME:
        raise HTTPException(404, f"unknown mapping {name!r}; mappings: {', '.join(BY_NAME)}")
    return name


def _run_json(run: Any, lines: list[Any]) -> FullSyncRunOut:
    now = utcnow()
    return FullSyncRunOut.model_validate({
        "id": run.id, "status": jobs.run_status(lines), "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "waiting_for_error": sorted(jobs.blocked(lines)), "lines": [jobs.line_json(line, now) for line in lines]})


# ---- full synchronization ---------------------------------------------------------------------------------------


# `review` is left out with `review_lines=false` (unset fields are not answered).
@router.get("/full-sync", response_model=FullSyncStatus, response_model_exclude_unset=True)
async def full_sync_status(request: Request, db: DatabaseDep, review_lines: bool = True) -> FullSyncStatus:
    """The latest run with its lines (status Ready / In Progress / Finished / Error, counts, timestamps), and
    the review: per mapping in dependency order, the record counts and the recommendation.
    `?review_lines=false` skips the review (it reads one page per side and mapping)."""
    async with db.session() as session:
        run = await jobs.latest_run(session)
        lines = await jobs.run_lines(session, run.id) if run is not None and run.id is not None else []
    out: dict[str, Any] = {"run": _run_json(run, lines) if run is not None else None}
    unavailable = await unavailable_mappings(db)
    if review_lines:
        out["review"] = await review(request, db, [n for n in jobs.full_sync_mappings() if n not in unavailable])
    return FullSyncStatus(**out, unavailable=unavailable)


@router.post("/full-sync", status_code=202, response_model=FullSyncStarted, responses={400: {}, 404: {}, 409: {}})
async def full_sync_start(body: Annotated[FullSyncRequest, Body(default_factory=FullSyncRequest)], request: Request,
                          db: DatabaseDep, broker: BrokerDep) -> FullSyncStarted:
    """Start a full synchronization of every mapping (or `{"mappings": [...]}`); 409 while one runs."""
    unavailable = await unavailable_mappings(db)
    refused = [n for n in body.mappings or [] if n in unavailable]
    if refused:
        raise HTTPException(409, "; ".join(f"{n} cannot run here: {unavailable[n]}" for n in refused))
    names = [n for n in chosen_mappings(body.mappings, jobs.full_sync_mappings()) if n not in unavailable]
    lines_review = await review(request, db, names)
    owner = uuid.uuid4().hex
    async with db.session() as session:
        if not await locks.acquire(session, ["job:full-sync-start"], owner, 30):
            raise HTTPException(409, "a full synchronization is being started right now")
        run = await jobs.latest_run(session)
        if run is not None and run.id is not None:
            current = await jobs.run_lines(session, run.id)
            if current and jobs.run_status(current) == jobs.IN_PROGRESS:
                raise HTTPException(409, f"full synchronization run {run.id} is in progress; wait for it to finish "
                                         "or restart its lines")
        run = await jobs.create_run(session, names, {r.mapping: r.recommendation for r in lines_review})
        await locks.release(session, ["job:full-sync-start"], owner)
        assert run.id is not None
        lines = await jobs.run_lines(session, run.id)
    log.info("full synchronization started", run=run.id, mappings=names)
    await kick(broker, "full-sync")
    return FullSyncStarted(run=_run_json(run, lines), review=lines_review)


@router.delete("/full-sync/lines/{name}", response_model=FullSyncRestarted, responses={404: {}, 409: {}})
async def full_sync_restart(name: MappingName, db: DatabaseDep, broker: BrokerDep) -> FullSyncRestarted:
    """Delete and re-add a line in Error or In Progress (e.g. stuck after a worker died): it is Ready
    again with zero counts and runs as soon as its dependencies have finished."""
    known_mapping(name)
    async with db.session() as session:
        run = await jobs.latest_run(session)
        lines = await jobs.run_lines(session, run.id) if run is not None and run.id is not None else []
        line = next((x for x in lines if x.mapping == name), None)
        if line is None:
            raise HTTPException(404, f"the latest full synchronization has no line {name}")
        if line.status not in (jobs.ERROR, jobs.IN_PROGRESS):
            raise HTTPException(409, f"line {name} is {jobs.LABELS[line.status]}: only a line in Error or In "
                                     "Progress can be restarted")
        await jobs.restart_line(session, line)
        assert run is not None
        lines = await jobs.run_lines(session, line.run_id)
    log.info("full synchronization line restarted", run=line.run_id, mapping=name)
    await kick(broker, "full-sync")
    return FullSyncRestarted(run=_run_json(run, lines))


# ---- webhook registrations --------------------------------------------------------------------------------------


async def _states(db: Any) -> Subscriptions:
    async with db.session() as session:
        rows = await jobs.subscription_states(session)
    return Subscriptions.model_validate({
        "bc": [jobs.subscription_json(r) for r in rows if r.system == "bc"],
        "dataverse": [jobs.subscription_json(r) for r in rows if r.system == "dataverse"]})


@router.get("/subscriptions", response_model=Subscriptions)
async def subscriptions(db: DatabaseDep) -> Subscriptions:
    """The BC subscriptions and the Dataverse registration as the keeper last saw them (id, resource,
    expiry, status kept/renewed/created/failed/missing, last check, error)."""
    return await _states(db)


@router.post("/subscriptions/refresh", response_model=SubscriptionsRefresh, responses={409: {}, 502: {}})
async def subscriptions_refresh(request: Request, db: DatabaseDep, broker: BrokerDep,
                                settings: SettingsDep) -> JSONResponse:
    """Run the keeper now: renew, re-create, check the Dataverse registration; catch-up for the mappings
    whose subscription was re-created. 502 (with the same body) when the keeper met errors."""
    answer = await refresh_subscriptions(request, db, broker, settings)
    return JSONResponse(answer.model_dump(mode="json"), status_code=502 if answer.report.errors else 200)


async def refresh_subscriptions(request: Request, db: Any, broker: Broker, settings: Any) -> SubscriptionsRefresh:
    """`POST /admin/subscriptions/refresh` as a model (its status, 200 or 502, follows `report.errors`)."""
    bc = getattr(request.app.state, "bc", None)
    dv = getattr(request.app.state, "dv", None)
    if bc is None or dv is None or settings.bc_client_state is None or settings.dataverse_webhook_key is None:
        raise HTTPException(503, "the connections are not configured (BCSYNC_TENANT_ID, BCSYNC_CLIENT_ID, "
                                 "BCSYNC_CLIENT_SECRET, BCSYNC_BC_COMPANY_ID, BCSYNC_DATAVERSE_URL, "
                                 "BCSYNC_BC_CLIENT_STATE, BCSYNC_DATAVERSE_WEBHOOK_KEY)")
    try:
        async with keeper_lease(db, KEEPER_WAIT_SECONDS):
            report = await keep(settings, db, bc, dv)
    except KeeperBusy:
        raise HTTPException(409, "the subscription keeper is running in a worker right now; try again") from None
    if report.caught_up:
        await kick(broker, "catch-up")
    return SubscriptionsRefresh.model_validate({"report": report.json(), **(await _states(db)).model_dump()})


# ---- catch-up ---------------------------------------------------------------------------------------------------


# A mapping that never ran a catch-up has only `mapping`, `minutes` and `on_hold` (unset fields are left out).
@router.get("/catch-up", response_model=CatchUpStates, response_model_exclude_unset=True)
async def catch_up(db: DatabaseDep, settings: SettingsDep) -> CatchUpStates:
    """Per mapping: minutes between runs (the mapping's `reconcile_minutes`, else BCSYNC_RECONCILE_MINUTES;
    0 = off), watermarks per side, last and next run."""
    async with db.session() as session:
        states = await jobs.catch_up_states(session)
        out = []
        for name in jobs.catch_up_mappings():
            config, on_hold = await jobs.mapping_config(session, name)
            state = jobs.catch_up_json(states[name]) if name in states else {"mapping": name}
            out.append(CatchUpState.model_validate({
                **state, "minutes": jobs.reconcile_minutes(config, settings.reconcile_minutes), "on_hold": on_hold}))
    return CatchUpStates(mappings=out)


@router.post("/catch-up", status_code=202, response_model=CatchUpRequested, responses={400: {}, 404: {}})
async def catch_up_now(body: Annotated[CatchUpRequest, Body(default_factory=CatchUpRequest)], db: DatabaseDep,
                       broker: BrokerDep) -> CatchUpRequested:
    """Run the catch-up of every mapping (or `{"mappings": [...]}`) now, whatever its schedule."""
    names = chosen_mappings(body.mappings, jobs.catch_up_mappings())
    async with db.session() as session:
        await jobs.request_catch_up(session, names)
    await kick(broker, "catch-up")
    return CatchUpRequested(requested=names)


# ---- reconciliations --------------------------------------------------------------------------------------------


@router.get("/reconciles", response_model=ReconcileJobList)
async def reconcile_jobs(db: DatabaseDep, mapping: Annotated[str | None, Query(max_length=64)] = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> ReconcileJobList:
    """Reconciliations, newest first: waiting, running (with the records listed and couplings checked so far),
    finished or failed (with the reason). Kept 7 days."""
    async with db.session() as session:
        rows = await reconciles.recent(session, mapping, limit)
    return ReconcileJobList(jobs=[ReconcileJobOut.model_validate(reconciles.job_json(row)) for row in rows])
