"""Sign-in, its answer from Entra, sign-out."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service.console.auth import EntraSignIn, SignInFailed, new_csrf_token
from service.console.web import Reader, local_path, render
from service.logging import get_logger

log = get_logger(__name__)
router = APIRouter()


def _entra(request: Request) -> EntraSignIn:
    return request.app.state.console_sign_in


@router.get("/login", response_model=None)
async def login(request: Request, next: str | None = None) -> RedirectResponse | HTMLResponse:
    try:
        flow = await _entra(request).start()
    except SignInFailed as exc:
        log.warning("console sign-in could not start", detail=str(exc))
        return render(request, "message.html", 503, title="Sign-in unavailable", message=str(exc))
    request.session["flow"] = flow
    request.session["next"] = local_path(next)
    return RedirectResponse(flow["auth_uri"], status_code=303)


@router.get("/auth/callback", response_model=None)
async def callback(request: Request) -> RedirectResponse | HTMLResponse:
    flow = request.session.pop("flow", None)
    if not flow:
        return render(request, "message.html", 400, title="Sign-in not started here",
                      message="This browser has no sign-in waiting for this answer (it ran out, or the page was "
                              "opened twice).", link=("/console/login", "Sign in again"))
    answer = {k: v for k, v in request.query_params.items() if len(v) <= 8192}
    try:
        user = await _entra(request).finish(flow, answer)
    except SignInFailed as exc:
        log.warning("console sign-in refused", detail=str(exc))
        return render(request, "message.html", 401, title="Sign-in failed", message=str(exc),
                      link=("/console/login", "Sign in again"))
    target = local_path(request.session.get("next"))
    request.session.clear()  # a new session at sign-in: nothing from before it carries over
    request.session.update(user=user.model_dump(), csrf=new_csrf_token(), signed_in=int(time.time()))
    log.info("console sign-in", user=user.username, role=user.role)
    return RedirectResponse(target, status_code=303)


@router.post("/logout", response_model=None)
async def logout(request: Request, user: Reader) -> RedirectResponse:
    # A Reader may sign out too, but only with the page's CSRF token (no forced sign-out from elsewhere).
    form = await request.form()
    if form.get("csrf") != request.session.get("csrf"):
        return RedirectResponse("/console/", status_code=303)
    request.session.clear()
    log.info("console sign-out", user=user.username)
    return RedirectResponse(_entra(request).sign_out_uri(), status_code=303)


@router.get("/signed-out", response_class=HTMLResponse)
async def signed_out(request: Request) -> HTMLResponse:
    return render(request, "message.html", title="Signed out", message="You have signed out of the bcsync console.",
                  link=("/console/login", "Sign in again"))
