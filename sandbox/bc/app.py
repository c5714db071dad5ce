"""The BC stand-in's ASGI app: token check, service protection, faults and the request log in front
of the OData dispatcher, plus the `/_sandbox/` control router."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response

from sandbox.bc.api import dispatch
from sandbox.bc.batch import run_batch
from sandbox.bc.calls import Call, Reply, error_reply
from sandbox.bc.control import control_router, install_error_handler
from sandbox.bc.errors import BCError
from sandbox.bc.runtime import BC_AUDIENCE, BCSandbox
from sandbox.config import SandboxConfig
from sandbox.tokens import TokenError, TokenIssuer

CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
MAX_CONCURRENT = 5
_STORM_CODES = {429: "Application_TooManyRequests", 500: "Internal_ServerError", 502: "BadGateway",
                503: "Application_ServiceUnavailable", 504: "GatewayTimeout"}


def create_app(config: SandboxConfig, tokens: TokenIssuer, sb: BCSandbox | None = None) -> FastAPI:
    sb = sb or BCSandbox(config, tokens)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep(sb))
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await sb.webhooks.close()

    app = FastAPI(title="bcsync sandbox: Business Central", lifespan=lifespan, openapi_url=None)
    app.state.bc = sb
    gate = asyncio.Semaphore(MAX_CONCURRENT)
    app.include_router(control_router(sb))
    install_error_handler(app)

    @app.api_route("/v2.0/{tenant}/{environment}/api/{path:path}",
                   methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    async def api(request: Request, tenant: str, environment: str, path: str) -> Response:
        started, clock = time.time(), time.perf_counter()
        async with gate:  # BC serves 5 requests per user at a time and queues the rest
            reply = await _handle(sb, request, tenant, environment, path)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        sb.log.add(request.method, target, reply.status, started, (time.perf_counter() - clock) * 1000)
        return _response(reply)

    return app


async def _sweep(sb: BCSandbox) -> None:
    """Expired subscriptions are deleted even when nobody asks (as BC's job queue does)."""
    while True:
        await asyncio.sleep(0.5)
        sb.webhooks.expire()


def _response(reply: Reply) -> Response:
    headers = {"OData-Version": "4.0", **reply.headers}
    if reply.text is not None:
        return Response(reply.text.encode(), status_code=reply.status, headers=headers, media_type=reply.media_type)
    if reply.body is None:
        return Response(status_code=reply.status, headers=headers)
    content = json.dumps(reply.body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status_code=reply.status, headers=headers, media_type=CONTENT_TYPE)


async def _handle(sb: BCSandbox, request: Request, tenant: str, environment: str, path: str) -> Reply:
    try:
        if sb.faults.latency_ms:
            await asyncio.sleep(sb.faults.latency_ms / 1000)
        _storm(sb)
        _authorize(sb, request, tenant, environment)
        wait = sb.budget.take()
        if wait is not None:
            raise BCError(429, "Application_TooManyRequests",
                          f"Too many requests reached. Actual ({sb.budget.limit + 1}). "
                          f"Maximum ({sb.budget.limit}).", {"Retry-After": str(math.ceil(wait))})
        body = await _json_body(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        base = f"{request.url.scheme}://{request.url.netloc}/v2.0/{tenant}/{environment}/api"
        if path.endswith("/$batch") and path.count("/") == 1:
            if request.method != "POST":
                raise BCError(405, "BadRequest_MethodNotAllowed", "Use POST for $batch.")
            return await run_batch(sb, path.split("/")[0], body, headers, base)
        return await dispatch(sb, Call(request.method, path, dict(request.query_params), headers, body, base))
    except BCError as exc:
        return error_reply(exc)


def _storm(sb: BCSandbox) -> None:
    faults = sb.faults
    if faults.count <= 0 or not faults.status:
        return
    faults.count -= 1
    headers = {"Retry-After": str(faults.retry_after)} if faults.retry_after is not None else {}
    code = _STORM_CODES.get(faults.status, "Internal_ServerError")
    raise BCError(faults.status, code, f"Injected fault ({faults.status}).", headers)


def _authorize(sb: BCSandbox, request: Request, tenant: str, environment: str) -> None:
    challenge = {"WWW-Authenticate": (
        f'Bearer authorization_uri="{sb.tokens.issuer_host}/{sb.config.tenant_id}/oauth2/authorize", '
        f'resource_id="{BC_AUDIENCE}"')}
    try:
        claims = sb.tokens.validate(request.headers.get("authorization"), BC_AUDIENCE)
    except TokenError as exc:
        raise BCError(401, "Authentication_InvalidCredentials",
                      f"The server has rejected the client credentials ({exc}).", challenge) from exc
    if tenant.lower() != sb.config.tenant_id.lower() or claims.get("tid") != sb.config.tenant_id:
        raise BCError(401, "Authentication_InvalidCredentials",
                      f"The credentials provided are not valid for tenant '{tenant}'.", challenge)
    if environment.lower() != sb.config.environment.lower():
        raise BCError(404, "NoEnvironment", f"Environment '{environment}' does not exist.")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BCError(400, "BadRequest", "Invalid Request Body.") from exc
