"""Who is using the console: sign-in with Microsoft Entra ID and the two app roles.

The sign-in is OpenID Connect's authorization code flow with PKCE, through MSAL's `initiate_auth_code_flow` (it
makes the state, the nonce and the PKCE verifier) and `acquire_token_by_auth_code_flow` (it checks the state,
redeems the code with the verifier and the client secret, and checks the ID token's nonce). The flow waits in the
session cookie between the two. MSAL is synchronous: both calls run in a thread.

MSAL checks the state and the nonce but not the ID token itself; the token comes straight from Entra's token
endpoint over TLS, which OpenID Connect accepts, and we check it all the same: its RS256 signature against the
tenant's published keys (`<authority>/discovery/v2.0/keys`), its issuer (`<authority>/v2.0`), audience (our client
id) and expiry (Learn, "Microsoft identity platform ID tokens" / "OpenID Connect on the Microsoft identity
platform"; PyJWT does the checking).

The roles are the ID token's `roles` claim: the app roles assigned to the user (Learn, "Add app roles to your
application and receive them in the token"). `Reader` sees every page; `Operator` may also act. A user signed in
without either gets a 403 page, never the data.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import warnings
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import msal
from pydantic import BaseModel

from service.connectors.auth import MICROSOFT_HOSTS
from service.logging import get_logger
from service.settings import Settings

log = get_logger(__name__)
READER, OPERATOR = "Reader", "Operator"
CALLBACK_PATH = "/console/auth/callback"
SIGNED_OUT_PATH = "/console/signed-out"


class SignInFailed(Exception):
    """Entra refused the sign-in, or the answer did not belong to the flow this browser started."""


class ConsoleUser(BaseModel):
    name: str
    username: str
    object_id: str
    roles: list[str]

    @property
    def can_read(self) -> bool:
        return READER in self.roles or OPERATOR in self.roles

    @property
    def can_act(self) -> bool:
        return OPERATOR in self.roles

    @property
    def role(self) -> str:
        return OPERATOR if self.can_act else READER if self.can_read else "none"


class EntraSignIn:
    """The console's side of the authorization code flow, for the service's own app registration."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.tenant_id and settings.client_id and settings.client_secret):
            raise ValueError("the console signs in with the app registration: set BCSYNC_TENANT_ID, "
                             "BCSYNC_CLIENT_ID and BCSYNC_CLIENT_SECRET")
        host = str(settings.authority_host).rstrip("/")
        self.authority = f"{host}/{settings.tenant_id}"
        self.authority_origin = host
        public = str(settings.public_url).rstrip("/")
        self.redirect_uri = public + CALLBACK_PATH
        self.signed_out_uri = public + SIGNED_OUT_PATH
        self._client_id = settings.client_id
        self._secret = settings.client_secret.get_secret_value()
        self._discovery = (urlsplit(host).hostname or "") in MICROSOFT_HOSTS
        self._app: msal.ConfidentialClientApplication | None = None
        self._keys = jwt.PyJWKClient(f"{self.authority}/discovery/v2.0/keys", cache_keys=True, lifespan=3600)
        self._lock = threading.Lock()  # MSAL's app object is not documented as thread-safe

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:  # made on first use: MSAL reads the authority's metadata when constructed
            self._app = msal.ConfidentialClientApplication(
                self._client_id, client_credential=self._secret, authority=self.authority,
                instance_discovery=self._discovery)
        return self._app

    def _start(self) -> dict[str, Any]:
        with self._lock:
            try:
                # No scopes of our own: MSAL adds openid, profile and offline_access; the ID token is all we need.
                # The code comes back in the query (MSAL warns that form_post is safer, RFC 9700 4.3.1): a
                # cross-site form POST would not carry our SameSite=Lax cookie, which holds the flow that binds the
                # answer to this browser. The code is single-use and bound to the PKCE verifier, and the callback
                # answers with a redirect at once, under Referrer-Policy same-origin.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
                    return dict(self._application().initiate_auth_code_flow(
                        [], redirect_uri=self.redirect_uri, response_mode="query"))
            except (ValueError, OSError) as exc:
                raise SignInFailed(f"Entra ({self.authority}) is unavailable: {type(exc).__name__}") from None

    def _finish(self, flow: dict[str, Any], answer: dict[str, str]) -> ConsoleUser:
        with self._lock:
            app = self._application()
            try:
                result = app.acquire_token_by_auth_code_flow(flow, answer)
            except ValueError as exc:  # MSAL: the answer's state does not match this flow
                raise SignInFailed(f"the sign-in answer did not match this browser's sign-in: {exc}") from None
            finally:
                # The tokens are not used (the session holds who signed in): keep MSAL's cache from growing.
                for account in app.get_accounts():
                    app.remove_account(account)
        if "error" in result:
            raise SignInFailed(f"{result.get('error')}: {str(result.get('error_description', ''))[:300]}")
        claims = self._verified(str(result.get("id_token") or ""))
        roles = claims.get("roles") or []
        return ConsoleUser(name=str(claims.get("name") or claims.get("preferred_username") or "?"),
                           username=str(claims.get("preferred_username") or ""),
                           object_id=str(claims.get("oid") or claims.get("sub") or ""),
                           roles=[r for r in roles if r in (READER, OPERATOR)] if isinstance(roles, list) else [])

    def _verified(self, id_token: str) -> dict[str, Any]:
        try:
            key = self._keys.get_signing_key_from_jwt(id_token)
            return dict(jwt.decode(id_token, key.key, algorithms=["RS256"], audience=self._client_id,
                                   issuer=f"{self.authority}/v2.0", options={"require": ["exp", "iat", "aud", "iss"]},
                                   leeway=300))
        except jwt.PyJWTError as exc:  # PyJWKClientError (keys unreachable) is one too
            raise SignInFailed(f"the ID token from Entra did not pass its checks: {exc}") from None

    async def start(self) -> dict[str, Any]:
        """A new flow: `auth_uri` is where the browser goes; the rest waits in the session until the answer."""
        return await asyncio.to_thread(self._start)

    async def finish(self, flow: dict[str, Any], answer: dict[str, str]) -> ConsoleUser:
        return await asyncio.to_thread(self._finish, flow, answer)

    def sign_out_uri(self) -> str:
        """Entra's end-session endpoint, which comes back to the console's signed-out page (Learn, "Send a
        sign-out request": `/oauth2/v2.0/logout?post_logout_redirect_uri=`)."""
        return f"{self.authority}/oauth2/v2.0/logout?" + urlencode({"post_logout_redirect_uri": self.signed_out_uri})


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
