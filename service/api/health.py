"""Liveness, readiness (database and broker, each named) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import BrokerDep, DatabaseDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {}})
async def readyz(db: DatabaseDep, broker: BrokerDep) -> JSONResponse:
    """Ready when the database answers and RabbitMQ is connected."""
    checks: dict[str, dict[str, object]] = {}
    try:
        await asyncio.wait_for(db.ping(), 3.0)
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    checks["broker"] = {"ok": True} if broker.ready else {"ok": False, "error": "not connected"}
    ready = all(check["ok"] for check in checks.values())
    body = {"status": "ready" if ready else "unready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
