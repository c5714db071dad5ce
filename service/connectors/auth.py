"""Client-credentials tokens from Microsoft Entra through MSAL.

MSAL is synchronous (it uses requests), so every call runs in a worker thread, off the event loop. MSAL
keeps its own token cache and answers from it until shortly before expiry; a forced refresh drops a token a
server refused (401) so that the next call fetches a new one.

Every request needs a token, and a hop to a thread and back costs more than the request's own bookkeeping
(about 3% of a worker's CPU when it was taken for every request). So the event loop keeps the last token of
each scope until halfway to its expiry and asks MSAL (in a thread) only after that or on a forced refresh;
MSAL still decides whether that needs Entra.
"""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlsplit

import msal


class TokenError(Exception):
    """Entra refused to issue a token (bad client, secret or scope); the message says why."""


MICROSOFT_HOSTS = {"login.microsoftonline.com", "login.microsoft.com", "login.windows.net"}


class TokenProvider:
    def __init__(self, authority_host: str, tenant_id: str, client_id: str, client_secret: str) -> None:
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._client_id = client_id
        self._client_secret = client_secret
        self._discovery = (urlsplit(authority_host).hostname or "") in MICROSOFT_HOSTS
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()  # MSAL's app object is not documented as thread-safe
        self._held: dict[str, tuple[str, float]] = {}  # scope → (token, monotonic time to ask MSAL again)

    def _application(self) -> msal.ConfidentialClientApplication:
        # Made on first use, not at start: MSAL reads the authority's metadata when it is constructed, and a
        # process must start (and retry later) even while Entra is unreachable.
        if self._app is None:
            self._app = msal.ConfidentialClientApplication(
                self._client_id,
                client_credential=self._client_secret,
                authority=self._authority,
                # Outside Microsoft's cloud, MSAL must not ask Microsoft to validate the authority: it then
                # reads `<authority>/v2.0/.well-known/openid-configuration` for the token endpoint.
                instance_discovery=self._discovery,
            )
        return self._app

    def _acquire(self, scope: str, force_refresh: bool) -> tuple[str, float]:
        with self._lock:
            try:
                app = self._application()
            except (ValueError, OSError) as exc:  # metadata unreachable or unreadable
                raise TokenError(f"authority {self._authority} unavailable: {type(exc).__name__}") from None
            if force_refresh:
                for cached in app.token_cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN):
                    app.token_cache.remove_at(cached)
            result = app.acquire_token_for_client(scopes=[scope])
        if "access_token" not in result:
            raise TokenError(f"{result.get('error')}: {str(result.get('error_description', ''))[:300]}")
        lifetime = result.get("expires_in")  # seconds left, also for a token MSAL answered from its cache
        return str(result["access_token"]), float(lifetime) if isinstance(lifetime, int | float) else 0.0

    async def token(self, scope: str, *, force_refresh: bool = False) -> str:
        held = self._held.get(scope)
        if held is not None and not force_refresh and time.monotonic() < held[1]:
            return held[0]
        if force_refresh:  # the held token was refused: never send it again, even if Entra fails now
            self._held.pop(scope, None)
        started = time.monotonic()
        token, lifetime = await asyncio.to_thread(self._acquire, scope, force_refresh)
        self._held[scope] = (token, started + lifetime / 2)
        return token
