"""A signed-in console session without Entra: the cookie Starlette's SessionMiddleware would have set after sign-in.

The console keeps its session in the `bcsync_console` cookie: the session as JSON, base64-encoded, signed with
itsdangerous' TimestampSigner under BCSYNC_CONSOLE_SESSION_SECRET (starlette/middleware/sessions.py). A test that
knows the secret writes the cookie the sign-in callback would have left (service/console/signin_pages.py): the
user with their app roles, and the CSRF token its forms carry.

    settings = make_settings(url, namespace, **CONSOLE_SETTINGS)
    async with running_api(settings) as (base, _), httpx.AsyncClient(base_url=base) as client:
        csrf = sign_in(client, base, OPERATOR)
        await client.post("/console/errors/1/retry", data={"csrf": csrf})
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from base64 import b64encode
from typing import Any
from urllib.parse import urlsplit

import httpx
import itsdangerous

SESSION_COOKIE = "bcsync_console"
SESSION_SECRET = "test-console-session-secret-0123456789abcdef"  # at least 32 characters (Settings)
# What Settings needs for the console to be there at all: an app registration (never asked: nobody signs in
# through Entra here) and the session key.
CONSOLE_SETTINGS: dict[str, Any] = {
    "tenant_id": "00000000-0000-4000-8000-0000000000aa", "client_id": "00000000-0000-4000-8000-0000000000bb",
    "client_secret": "test-client-secret", "console_session_secret": SESSION_SECRET,
}
READER, OPERATOR, NOBODY = ("Reader",), ("Operator",), ()


def user(roles: tuple[str, ...] | list[str], name: str | None = None) -> dict[str, Any]:
    who = name or ("Olga Operator" if "Operator" in roles else "Rita Reader" if roles else "Nora Nobody")
    login = who.split()[0].lower()
    return {"name": who, "username": f"{login}@contoso.example", "object_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, login)),
            "roles": list(roles)}


def session_cookie(session: dict[str, Any], secret: str = SESSION_SECRET, *, at: float | None = None) -> str:
    """The cookie's value for this session, as SessionMiddleware signs it (`at`: when it was signed)."""
    data = b64encode(json.dumps(session).encode("utf-8"))
    signer = itsdangerous.TimestampSigner(secret)
    if at is not None:
        signer.get_timestamp = lambda: int(at)  # type: ignore[method-assign]
    return signer.sign(data).decode("utf-8")


def signed_in_session(roles: tuple[str, ...] | list[str], name: str | None = None) -> dict[str, Any]:
    """What the sign-in callback leaves in the session."""
    return {"user": user(roles, name), "csrf": secrets.token_urlsafe(32), "signed_in": int(time.time())}


def sign_in(client: httpx.AsyncClient | httpx.Client, base_url: str, roles: tuple[str, ...] | list[str],
            name: str | None = None, secret: str = SESSION_SECRET) -> str:
    """Put a signed-in session in the client's cookie jar (for the console's path on `base_url`'s host, where
    the console's own cookies replace it); returns its CSRF token."""
    session = signed_in_session(roles, name)
    client.cookies.set(SESSION_COOKIE, session_cookie(session, secret), domain=urlsplit(base_url).hostname or "",
                       path="/console")
    return str(session["csrf"])
