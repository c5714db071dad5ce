"""The operator API under /admin (bearer BCSYNC_ADMIN_TOKEN). More operations arrive with the
operations issue; this module holds the authentication and the status overview."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel

from schemas.mappings import MAPPINGS
from service.api.deps import BrokerDep, DatabaseDep, SettingsDep, secret_matches
from service.logging import get_logger
from service.store import outbox

log = get_logger(__name__)


async def require_admin(
    request: Request, settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    if settings.admin_token is None:
        raise HTTPException(503, "the admin API is disabled: set BCSYNC_ADMIN_TOKEN")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret_matches(token.strip(), settings.admin_token.get_secret_value()):
        client = request.client.host if request.client else None
        log.warning("admin request refused", path=request.url.path, client=client)
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class MappingStatus(BaseModel):
    name: str
    direction: str
    depends_on: list[str]
    on_hold: bool
    queue_depth: int | None  # None while RabbitMQ is unreachable
    last_success: str | None
    lag_seconds: float | None
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
    depths: dict[str, int | None] = {}
    for mapping in MAPPINGS:
        queue = broker.queues.get(mapping.name) if broker.ready else None
        try:
            depths[mapping.name] = (await queue.declare()).message_count if queue else None
        except Exception:
            depths[mapping.name] = None
    return Status(
        broker_connected=broker.ready,
        outbox_pending=pending,
        mappings=[
            MappingStatus(
                name=m.name, direction=m.direction.value, depends_on=list(m.depends_on), on_hold=False,
                queue_depth=depths[m.name], last_success=None, lag_seconds=None, open_errors=0,
            )
            for m in MAPPINGS
        ],
    )
