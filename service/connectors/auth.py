"""Client-credentials tokens from Microsoft Entra through MSAL.

MSAL is synchronous (it uses requests), so every call runs in a worker thread, off the event loop. MSAL
keeps its own token cache and answers from it until shortly before expiry; `invalidate` drops a token a
server refused (401) so that the next call fetches a new one.
"""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlsplit

import msal


class TokenError(Exception):
    """Entra refused to issue a token (bad client, secret or scope); the message says why."""


MICROSOFT_HOSTS = {"login.microsoftonline.com", "login.microsoft.com", "login.windows.net"}


class TokenProvider:
    def __init__(self, authority_host: str, tenant_id: str, client_id: str, client_secret: str) -> None:
        host = urlsplit(authority_host).hostname or ""
        self._app = msal.ConfidentialClientApplication(
            client_id,
            client_credential=client_secret,
            authority=f"{authority_host.rstrip('/')}/{tenant_id}",
            # Outside Microsoft's cloud, MSAL must not ask Microsoft to validate the authority: it then
            # reads `<authority>/v2.0/.well-known/openid-configuration` for the token endpoint.
            instance_discovery=host in MICROSOFT_HOSTS,
        )
        self._lock = threading.Lock()  # MSAL's app object is not documented as thread-safe

    def _acquire(self, scope: str, force_refresh: bool) -> str:
        with self._lock:
            if force_refresh:
                for account_token in self._app.token_cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN):
                    self._app.token_cache.remove_at(account_token)
            result = self._app.acquire_token_for_client(scopes=[scope])
        if "access_token" not in result:
            raise TokenError(f"{result.get('error')}: {str(result.get('error_description', ''))[:300]}")
        return str(result["access_token"])

    async def token(self, scope: str, *, force_refresh: bool = False) -> str:
        return await asyncio.to_thread(self._acquire, scope, force_refresh)
