"""What every console page shares: who may see it, who may act, the CSRF check, rendering and notices.

A page's route takes `Reader` (signed in, with a role) and an action's route takes `Operator` (signed in as an
Operator, and the form's CSRF token matches the session's). Both are FastAPI dependencies; their refusals are
exceptions that service/console/app.py turns into a sign-in redirect or a 403 page.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from service import __version__
from service.console.auth import ConsoleUser
from service.logging import get_logger

log = get_logger(__name__)
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
NAV = (("overview", "/console/", "Overview"), ("errors", "/console/errors", "Errors"),
       ("records", "/console/records", "Records"), ("mappings", "/console/mappings", "Mappings"),
       ("full-sync", "/console/full-sync", "Full sync"), ("subscriptions", "/console/subscriptions", "Subscriptions"),
       ("setup", "/console/setup-check", "Setup check"))
TEMPLATES.env.globals.update(nav=NAV, version=__version__)


class NotSignedIn(Exception):
    """No sign-in (or it ran out): pages redirect to the sign-in, actions answer 401."""


class Forbidden(Exception):
    """Signed in, but not allowed: no role, a Reader acting, or a form without the session's CSRF token."""

    def __init__(self, reason: str, user: ConsoleUser | None) -> None:
        super().__init__(reason)
        self.reason, self.user = reason, user


def signed_in_user(request: Request) -> ConsoleUser | None:
    raw = request.session.get("user")
    return ConsoleUser.model_validate(raw) if raw else None


async def _reader(request: Request) -> ConsoleUser:
    user = signed_in_user(request)
    if user is None:
        raise NotSignedIn()
    if not user.can_read:
        raise Forbidden(f"{user.username or user.name} has no role in bcsync: an administrator assigns the app role "
                        "Reader (to see) or Operator (to act) in Entra ID, under Enterprise applications → "
                        "bcsync → Users and groups. Sign out and in again afterwards.", user)
    return user


async def _operator(request: Request) -> ConsoleUser:
    user = await _reader(request)
    if not user.can_act:
        log.warning("console action refused: not an Operator", path=request.url.path, user=user.username)
        raise Forbidden("Only an Operator may do this; you are signed in as a Reader.", user)
    form = await request.form()  # Starlette keeps it: the route reads the same form
    given = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(given, str) or not expected or not hmac.compare_digest(given.encode(), str(expected).encode()):
        log.warning("console action refused: CSRF token missing or wrong", path=request.url.path, user=user.username)
        raise Forbidden("This form was not sent from the console page (its security token is missing or old). "
                        "Reload the page and try again.", user)
    return user


Reader = Annotated[ConsoleUser, Depends(_reader)]
Operator = Annotated[ConsoleUser, Depends(_operator)]


def notify(request: Request, text: str, kind: str = "ok") -> None:
    """A notice shown once, on the next page (kind: ok | error)."""
    request.session.setdefault("notices", []).append([kind, text[:1000]])


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    notices = request.session.pop("notices", []) if "session" in request.scope else []
    base = {"user": signed_in_user(request) if "session" in request.scope else None,
            "csrf": request.session.get("csrf", "") if "session" in request.scope else "",
            "notices": notices, "active": context.pop("active", None)}
    return TEMPLATES.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def back(to: str) -> RedirectResponse:
    """After an action: see its page again (303, so a reload does not repeat the POST)."""
    return RedirectResponse(to, status_code=303)


def sign_in_redirect(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(here, safe='')}", status_code=303)


def local_path(target: str | None) -> str:
    """Only a path of the console is a place to come back to after sign-in (no open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/"


LIVE_RESULT_SECONDS = 60.0  # how long a page reuses what it asked BC and Dataverse (each ask spends their budget)


def remembered(request: Request, key: str, max_age: float = LIVE_RESULT_SECONDS) -> tuple[Any, float] | None:
    """What a page asked BC and Dataverse less than `max_age` seconds ago in this api process, with its age: pages
    that count or check the live systems show it (and a link to ask again) instead of spending the integration's
    request budget on every load (docs/benchmarks.md, Console page loads)."""
    kept = getattr(request.app.state, "console_remembered", {}).get(key)
    if kept is None or time.monotonic() - kept[0] > max_age:
        return None
    return kept[1], time.monotonic() - kept[0]


def remember(request: Request, key: str, value: Any) -> None:
    if not hasattr(request.app.state, "console_remembered"):
        request.app.state.console_remembered = {}
    request.app.state.console_remembered[key] = (time.monotonic(), value)


def member(row: Any, key: str, default: Any = None) -> Any:
    """A field of what an admin function answered: a pydantic model, or a dict where one is built by hand."""
    return row.get(key, default) if isinstance(row, dict) else getattr(row, key, default)
