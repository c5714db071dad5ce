"""The operator console: a sub-application of the api mounted at /console.

It has its own session cookie (signed with BCSYNC_CONSOLE_SESSION_SECRET, HttpOnly, SameSite=Lax, Secure when the
public URL is https, path /console), its own error pages and strict security headers; the webhook doors and the
admin API never see any of it. It shares the api's state (store, broker, connectors) and calls the admin API's
functions, so the console and the API cannot disagree.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.sessions import SessionMiddleware

from service.connectors.auth import TokenError
from service.connectors.http import ApiError
from service.console import pages_errors, pages_jobs, pages_mappings, pages_overview, pages_records, signin_pages
from service.console.auth import EntraSignIn
from service.console.web import Forbidden, NotSignedIn, render, sign_in_redirect
from service.logging import get_logger, redact_text
from service.settings import Settings

log = get_logger(__name__)


def _security_headers(authority_origin: str) -> Callable[[Request, RequestResponseEndpoint], Awaitable[Response]]:
    # form-action names Entra: Chromium applies it to the redirect that follows the sign-out form.
    policy = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
              f"frame-ancestors 'none'; base-uri 'none'; form-action 'self' {authority_origin}")

    async def add(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith("/console/static/"):
            response.headers["Cache-Control"] = "no-store"  # pages hold data: no copies in caches
        return response

    return add


def create_console(settings: Settings, state: State) -> FastAPI:
    console = FastAPI(title="bcsync console", openapi_url=None, docs_url=None, redoc_url=None)
    console.state = state  # the api's store, broker and connectors (set by its lifespan)
    try:
        console.state.console_sign_in = EntraSignIn(settings)
    except ValueError as exc:
        reason = str(exc)

        @console.get("/{path:path}", include_in_schema=False)
        async def unavailable(request: Request, path: str) -> HTMLResponse:
            return render(request, "message.html", 503, title="Console not configured", message=reason)

        return console
    secret = settings.console_session_secret
    if secret is None:
        log.warning("BCSYNC_CONSOLE_SESSION_SECRET is unset: console sign-ins end when this api restarts and are "
                    "not shared with other api processes")
    console.add_middleware(BaseHTTPMiddleware, dispatch=_security_headers(console.state.console_sign_in
                                                                          .authority_origin))
    console.add_middleware(
        SessionMiddleware, secret_key=secret.get_secret_value() if secret else secrets.token_urlsafe(32),
        session_cookie="bcsync_console", max_age=int(settings.console_session_hours * 3600), path="/console",
        same_site="lax", https_only=str(settings.public_url).startswith("https://"))
    console.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for module in (signin_pages, pages_overview, pages_errors, pages_records, pages_mappings, pages_jobs):
        console.include_router(module.router)

    @console.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: Exception) -> Response:
        if request.method == "GET":
            return sign_in_redirect(request)
        return render(request, "message.html", 401, title="Not signed in", message="Sign in to use the console.",
                      link=("/console/login", "Sign in"))

    @console.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)
        return render(request, "message.html", 403, title="Not allowed", message=exc.reason)

    @console.exception_handler(HTTPException)
    async def refused(request: Request, exc: Exception) -> Response:
        # What the admin functions refuse (404 unknown, 409 conflict, 502 upstream, 503 broker away), and unknown
        # console paths, as a page.
        assert isinstance(exc, HTTPException)
        return render(request, "message.html", exc.status_code, title=f"{exc.status_code}: not done",
                      message=str(exc.detail))

    @console.exception_handler(ApiError)
    @console.exception_handler(TokenError)
    async def upstream_failed(request: Request, exc: Exception) -> Response:
        detail = redact_text(str(exc))[:1000]  # ApiError and TokenError carry no secret; redacted all the same
        log.warning("console: upstream system failed", path=request.url.path, status=502, detail=detail)
        return render(request, "message.html", 502, title="Business Central, Dataverse or Entra refused",
                      message=detail)

    @console.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())[:1000]
        log.warning("console request refused", path=request.url.path, status=400, detail=problems)
        return render(request, "message.html", 400, title="Invalid request", message=problems)

    @console.get("", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    return console
