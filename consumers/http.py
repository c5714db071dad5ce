"""The worker's own small HTTP server, on `BCSYNC_WORKER_METRICS_PORT`: /healthz, /readyz and /metrics.

It runs on the worker's event loop, not in a thread of its own: a /healthz answer then proves that the loop
is turning (a loop stuck in a blocking call answers nothing, and an orchestrator restarts the worker),
and /readyz checks what the worker needs to make progress, the database and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.broker import Broker
from service.logging import get_logger
from service.store.db import Database

log = get_logger(__name__)
CHECK_SECONDS = 3.0


def health_app(db: Database, broker: Broker) -> FastAPI:
    app = FastAPI(title="bcsync worker", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks: dict[str, dict[str, object]] = {}
        try:
            await asyncio.wait_for(db.ping(), CHECK_SECONDS)
            checks["database"] = {"ok": True}
        except Exception as exc:
            checks["database"] = {"ok": False, "error": type(exc).__name__}
        checks["broker"] = {"ok": True} if broker.ready else {"ok": False, "error": "not connected"}
        ready = all(check["ok"] for check in checks.values())
        return JSONResponse({"status": "ready" if ready else "unready", "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def bind(host: str, port: int) -> socket.socket | None:
    """The listening socket, or None (logged) when another process on this machine has the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.warning("worker health port busy: no /healthz, /readyz, /metrics", port=port, error=str(exc))
        return None
    return sock


class _EmbeddedServer(uvicorn.Server):
    """The worker owns SIGTERM and SIGINT (they stop consuming first); this server must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(db: Database, broker: Broker, host: str, port: int) -> None:
    """Serve until cancelled (a coroutine for the worker's background tasks)."""
    sock = bind(host, port)
    if sock is None:
        return
    config = uvicorn.Config(health_app(db, broker), log_config=None, access_log=False, lifespan="off")
    server = _EmbeddedServer(config)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
