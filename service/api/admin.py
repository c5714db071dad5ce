"""The operator API under /admin (bearer BCSYNC_ADMIN_TOKEN). More operations arrive with the
operations issue; this module holds the authentication and the status overview."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from schemas.mappings import MAPPINGS
from service.api.deps import BrokerDep, DatabaseDep, SettingsDep, secret_matches
from service.api.models_setup import SetupCheck, SetupReport
from service.broker import Broker
from service.logging import get_logger
from service.metrics import SYNC_LAG
from service.setup import SetupRefused, run_check, run_setup
from service.store import mapping_configs, outbox, synclog
from service.subscriptions import KeeperBusy

log = get_logger(__name__)
QUEUE_DEPTH_SECONDS = 2.0
# Declares the bearer scheme in the OpenAPI document; the comparison itself is ours (constant time).
_bearer = HTTPBearer(auto_error=False, scheme_name="adminToken", description="BCSYNC_ADMIN_TOKEN")


async def require_admin(
    request: Request, settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> None:
    if settings.admin_token is None:
        raise HTTPException(503, "the admin API is disabled: set BCSYNC_ADMIN_TOKEN")
    token = credentials.credentials.strip() if credentials is not None else None
    if not secret_matches(token, settings.admin_token.get_secret_value()):
        client = request.client.host if request.client else None
        log.warning("admin request refused", path=request.url.path, client=client)
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class MappingStatus(BaseModel):
    name: str
    direction: str
    depends_on: list[str]
    on_hold: bool
    available: bool = Field(description="false: setup keeps it off (see `unavailable_reason`)")
    unavailable_reason: str | None
    bc_delivery: str | None = Field(
        description="push (webhook) | poll | none (BC's changes not needed) | null before setup")
    queue_depth: int | None = Field(description="null while RabbitMQ is unreachable")
    last_success: str | None = Field(description="ISO 8601: when the mapping last wrote or coupled something")
    lag_seconds: float | None = Field(description="mean lag this api process observed, if any")
    open_errors: int


class Status(BaseModel):
    broker_connected: bool
    outbox_pending: int
    mappings: list[MappingStatus]


@router.get("/status", response_model=Status)
async def status(db: DatabaseDep, broker: BrokerDep) -> Status:
    """Per mapping: hold state, queue depth, last success, lag and open errors."""
    async with db.session() as session:
        pending = await outbox.count_pending(session)
        configs = await mapping_configs.all_configs(session)
        errors = await synclog.open_error_counts(session)
        last = await synclog.last_success(session)
    counted = await asyncio.gather(*(_queue_depth(broker, m.name) for m in MAPPINGS))
    depths = {m.name: depth for m, depth in zip(MAPPINGS, counted, strict=True)}
    return Status(
        broker_connected=broker.ready,
        outbox_pending=pending,
        mappings=[
            MappingStatus(
                name=m.name, direction=m.direction.value, depends_on=list(m.depends_on),
                on_hold=bool(configs.get(m.name) and configs[m.name].on_hold), queue_depth=depths[m.name],
                available=not (configs.get(m.name) and configs[m.name].unavailable),
                unavailable_reason=configs[m.name].unavailable if m.name in configs else None,
                bc_delivery=configs[m.name].bc_delivery if m.name in configs else None,
                last_success=last.get(m.name), lag_seconds=lag_seconds(m.name), open_errors=errors.get(m.name, 0),
            )
            for m in MAPPINGS
        ],
    )


async def _queue_depth(broker: Broker, mapping: str) -> int | None:
    """The mapping queue's depth (a passive declare), or None: RabbitMQ away, or no answer within 2 s (a status
    page must not hang on a broker that holds its port without answering)."""
    queue = broker.queues.get(mapping) if broker.ready else None
    if queue is None:
        return None
    try:
        return (await asyncio.wait_for(queue.declare(), QUEUE_DEPTH_SECONDS)).message_count
    except Exception:
        return None


def lag_seconds(mapping: str) -> float | None:
    """Mean lag of this process's view of the mapping (sum/count of the lag histogram), if any."""
    for metric in SYNC_LAG.collect():
        total = count = 0.0
        for sample in metric.samples:
            if sample.labels.get("mapping") != mapping:
                continue
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
        if count:
            return round(total / count, 3)
    return None


@router.post("/setup", response_model=SetupReport, responses={400: {}, 409: {}, 503: {}})
async def setup(request: Request, settings: SettingsDep, db: DatabaseDep) -> SetupReport:
    """The assisted setup: check both connections (and refuse an interactive integration user), seed the
    default mappings, register the BC subscriptions and the Dataverse webhook; idempotent."""
    bc, dv = getattr(request.app.state, "bc", None), getattr(request.app.state, "dv", None)
    if bc is None or dv is None:
        raise HTTPException(503, "the Business Central and Dataverse connections are not configured")
    try:
        return SetupReport.model_validate(await run_setup(settings, bc, dv, db))
    except SetupRefused as exc:
        raise HTTPException(400, str(exc)) from None
    except KeeperBusy as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/setup/check", response_model=SetupCheck, responses={400: {}, 503: {}})
async def setup_check(request: Request, db: DatabaseDep) -> SetupCheck:
    """Read-only: the mappings held against both systems' live metadata (unknown or read-only fields, option
    values, lookups), which mappings setup would keep off and why, and which BC sides it would poll."""
    bc, dv = getattr(request.app.state, "bc", None), getattr(request.app.state, "dv", None)
    if bc is None or dv is None:
        raise HTTPException(503, "the Business Central and Dataverse connections are not configured")
    try:
        return SetupCheck.model_validate(await run_check(bc, dv, db))
    except SetupRefused as exc:
        raise HTTPException(400, str(exc)) from None
