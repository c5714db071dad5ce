"""User sign-in of the Entra stand-in: the OpenID Connect authorization code flow (with PKCE) of the v2.0 endpoint.

`GET /{tenant}/oauth2/v2.0/authorize` answers a login page with a user picker (the sandbox's fixed users, see
`SIGNIN_USERS` in sandbox/config.py); picking a user redirects to the app's `redirect_uri` with `code`, `state`
and `session_state`; `POST /{tenant}/oauth2/v2.0/token` with `grant_type=authorization_code` (sandbox/entra.py
authenticates the client, then calls `SignIn.redeem`) answers an ID token, an access token and, with
`offline_access`, a refresh token; `GET|POST /{tenant}/oauth2/v2.0/logout` signs out.

Sources (Microsoft Learn page titles, read in the MicrosoftDocs/entra-docs repository):
- [CODE] "Microsoft identity platform and OAuth 2.0 authorization code flow" (v2-oauth2-auth-code-flow.md)
- [OIDC] "OpenID Connect on the Microsoft identity platform" (v2-protocols-oidc.md)
- [IDT] "ID token claims reference" (id-token-claims-reference.md)
- [ROLES] "Add app roles to your application and receive them in the token" (howto-add-app-roles-in-apps.md)
- [REPLY] "Redirect URI (reply URL) restrictions and limitations" (reply-url.md)
- [ERR] "Microsoft Entra authentication and authorization error codes" (reference-error-codes.md)
Facts that Learn does not state are marked "unverified" with where they come from instead.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from sandbox.config import SandboxConfig, SandboxUser
from sandbox.tokens import TokenIssuer

CODE_LIFETIME = 600  # [CODE] "Authorization codes are short lived. Typically, they expire after about 10 minutes."
FLOW_LIFETIME = 900  # the login page's pending request (Entra's own "flow token"; its lifetime is not documented)
ID_TOKEN_LIFETIME = 3600  # "ID tokens" (id-tokens.md): the default lifetime of an ID token is one hour
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
CONSOLE_CALLBACK = "/console/auth/callback"
OIDC_SCOPES = {"openid", "profile", "email", "offline_access"}
# [OIDC] "Get an access token for the UserInfo endpoint": with only OIDC scopes the access token is for the
# UserInfo endpoint, which "is hosted on Microsoft Graph" — so its audience is Graph.
GRAPH = "https://graph.microsoft.com"


def error_body(error: str, code: int, description: str) -> dict[str, Any]:
    """Entra's JSON error ([CODE] "Error response"; `error_uri` per [ERR] "Handling error codes")."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} "
                             f"Timestamp: {now}",
        "error_codes": [code], "timestamp": now, "trace_id": trace, "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def json_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    return JSONResponse(error_body(error, code, description), status_code=status)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))), no padding."""
    return b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())


@dataclass
class PendingAuthorization:
    """A validated /authorize request waiting for the user to pick an account (kept server-side: the login
    page's form carries only its random id, so none of its parameters can be altered)."""

    client_id: str
    redirect_uri: str
    response_mode: str
    scopes: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    login_hint: str | None
    client_info: bool
    expires: float


@dataclass
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    scopes: list[str]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: SandboxUser
    session_id: str
    auth_time: int
    expires: float
    redeemed: bool = False


class AuthorizeError(Exception):
    """An /authorize error that goes back to the (validated) redirect URI."""

    def __init__(self, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.error, self.code, self.description = error, code, description


@dataclass
class SignIn:
    config: SandboxConfig
    tokens: TokenIssuer
    pending: dict[str, PendingAuthorization] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    refresh_tokens: dict[str, AuthorizationCode] = field(default_factory=dict)
    sign_ins: int = 0

    # --- redirect URIs ------------------------------------------------------------------------------------------
    def reply_url_allowed(self, uri: str) -> bool:
        """[REPLY]: a redirect URI must match a registered one exactly (case-sensitive), except that for loopback
        hosts "the port component ... is ignored for the purposes of matching a redirect URI" (Learn's example is
        `localhost`; RFC 8252 7.3, which it cites, covers `127.0.0.1` too). `http` only for localhost."""
        if self.config.reply_urls:
            return any(_same_reply_url(uri, registered) for registered in self.config.reply_urls)
        # Sandbox leniency, not Entra: with no reply URLs configured, accept any http(s) URL on a loopback host whose
        # path ends with /console/auth/callback, because the tests and the demo pick the console's port at run time.
        parts = urlsplit(uri)
        return (parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS
                and parts.path.endswith(CONSOLE_CALLBACK))

    def logout_redirect_allowed(self, uri: str) -> bool:
        """[OIDC] "Send a sign-out request": post_logout_redirect_uri "must match one of the redirect URIs registered
        for your application". Sandbox leniency: any URL of the same origin as a registered (or, with none
        registered, an acceptable) reply URL, so the console can send users back to its home page."""
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        if self.config.reply_urls:
            return any(_same_reply_url(uri, registered) or _same_origin(uri, registered)
                       for registered in self.config.reply_urls)
        return (parts.hostname or "") in LOOPBACK_HOSTS

    # --- /authorize -----------------------------------------------------------------------------------------
    def authorize(self, tenant: str, params: dict[str, str]) -> Response:
        client_id = params.get("client_id", "")
        if not client_id:
            return error_page(400, 900144, "The request body must contain the following parameter: 'client_id'.")
        if client_id != self.config.client_id:
            # [ERR] AADSTS700016 UnauthorizedClient_DoesNotMatchRequest; shown by Entra on its own page because the
            # redirect URI cannot be checked without the app (message as the token endpoint words it).
            return error_page(400, 700016, f"Application with identifier '{client_id}' was not found in the "
                                           f"directory '{self.config.tenant_id}'. This can happen if the application "
                                           "has not been installed by the administrator of the tenant or consented "
                                           "to by any user in the tenant. You might have sent your authentication "
                                           "request to the wrong tenant.")
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            if not self.config.reply_urls:
                return error_page(400, 900971, "No reply address provided.")  # [ERR] AADSTS900971
            # [OIDC]: without redirect_uri "the endpoint will pick one registered redirect_uri at random"; the
            # sandbox takes the first (deterministic).
            redirect_uri = self.config.reply_urls[0]
        parts = urlsplit(redirect_uri)
        if not parts.scheme or not parts.netloc:
            return error_page(400, 90102, "'redirect_uri' value must be a valid absolute URI.")  # [ERR] 90102
        if not self.reply_url_allowed(redirect_uri):
            # [ERR] AADSTS50011 InvalidReplyTo; wording as Entra's page shows it (quoted in public issue threads,
            # e.g. azure-samples/active-directory-aspnetcore-webapp-openidconnect-v2#741).
            return error_page(400, 50011, f"The redirect URI '{redirect_uri}' specified in the request does not "
                                          f"match the redirect URIs configured for the application '{client_id}'. "
                                          "Make sure the redirect URI sent in the request matches one added to your "
                                          "application in the Azure portal. Navigate to "
                                          "https://aka.ms/redirectUriMismatchError to learn more about how to fix "
                                          "this.")
        # From here on, errors go back to the redirect URI ([CODE] "Error response": "Error responses may also be
        # sent to the redirect_uri so the app can handle them appropriately"), with the request's state.
        state = params.get("state")
        response_mode = params.get("response_mode") or "query"  # [CODE] response_mode: `query` is the default
        if response_mode not in ("query", "fragment", "form_post"):
            # [ERR] AADSTS70007 UnsupportedResponseMode (delivered in the query, the one mode Entra defaults to).
            return deliver(redirect_uri, "query", {
                "error": "invalid_request",
                "error_description": _described(70007, f"The response_mode '{response_mode}' is not supported."),
                "state": state})
        try:
            pending = self._validate(params, client_id, redirect_uri, response_mode)
        except AuthorizeError as exc:
            return deliver(redirect_uri, response_mode, {
                "error": exc.error, "error_description": _described(exc.code, exc.description), "state": state})
        flow = secrets.token_urlsafe(32)
        now = time.time()
        self.pending = {k: v for k, v in self.pending.items() if v.expires > now}
        self.pending[flow] = pending
        return login_page(tenant, flow, self.config, pending)

    def _validate(self, params: dict[str, str], client_id: str, redirect_uri: str,
                  response_mode: str) -> PendingAuthorization:
        response_type = params.get("response_type", "")
        if not response_type:
            raise AuthorizeError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'response_type'.")
        kinds = set(response_type.split())
        if "token" in kinds:  # [ERR] AADSTS70005 "response type 'token' isn't enabled for the app"
            raise AuthorizeError("unsupported_response_type", 70005,
                                 "response_type 'token' is not enabled for the application.")
        if "id_token" in kinds:
            # [ERR] AADSTS700054 and [OIDC] "Enable ID tokens": the hybrid flow needs the ID token implicit grant,
            # which the sandbox's app registration does not enable.
            raise AuthorizeError("unsupported_response_type", 700054,
                                 "response_type 'id_token' is not enabled for the application.")
        if kinds != {"code"}:
            raise AuthorizeError("unsupported_response_type", 70005,
                                 f"The provided value for the input parameter 'response_type' is not valid: "
                                 f"'{response_type}'.")
        scope = params.get("scope", "")
        if not scope.strip():  # [CODE] scope: required
            raise AuthorizeError("invalid_request", 900144,
                                 "The request body must contain the following parameter: 'scope'.")
        prompt = params.get("prompt")
        # [CODE] prompt: "Valid values are login, none, consent, and select_account."
        if prompt and prompt not in ("login", "none", "consent", "select_account"):
            raise AuthorizeError("invalid_request", 90100, f"The parameter 'prompt' is empty or not valid: "
                                                           f"'{prompt}'.")
        if prompt == "none":
            # [CODE] login_required / [ERR] AADSTS50058: the sandbox keeps no single sign-on session, so a silent
            # request never finds a signed-in user.
            raise AuthorizeError("login_required", 50058,
                                 "A silent sign-in request was sent but no user is signed in.")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        # [CODE] code_challenge is "recommended for all application types, both public and confidential clients"
        # and required only for single-page apps: a confidential (web) client may omit PKCE. "Required if
        # code_challenge_method is included." "If excluded, code_challenge is assumed to be plaintext";
        # "The Microsoft identity platform supports both plain and S256."
        if method and not challenge:
            raise AuthorizeError("invalid_request", 900144,  # code unverified: Learn names no AADSTS code for it
                                 "The request body must contain the following parameter: 'code_challenge'.")
        if challenge:
            method = method or "plain"
            if method not in ("plain", "S256"):
                raise AuthorizeError("invalid_request", 90100,  # [ERR] 90100 InvalidRequestParameter
                                     f"The parameter 'code_challenge_method' is empty or not valid: '{method}'.")
            # RFC 7636 4.1/4.2: a verifier is 43-128 characters, so an S256 challenge is 43 (32 bytes, base64url);
            # [ERR] AADSTS501491 InvalidCodeChallengeMethodInvalidSize.
            if (method == "S256" and len(challenge) != 43) or (method == "plain" and not 43 <= len(challenge) <= 128):
                raise AuthorizeError("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
        return PendingAuthorization(
            client_id=client_id, redirect_uri=redirect_uri, response_mode=response_mode, scopes=scope.split(),
            state=params.get("state"), nonce=params.get("nonce"), code_challenge=challenge,
            code_challenge_method=method if challenge else None, login_hint=params.get("login_hint"),
            client_info=params.get("client_info") == "1", expires=time.time() + FLOW_LIFETIME)

    def pick(self, form: dict[str, str]) -> Response:
        pending = self.pending.pop(form.get("flow", ""), None)
        if pending is None or pending.expires < time.time():
            # [ERR] AADSTS50089 "Authentication failed due to flow token expired" (also: the page was used twice).
            return error_page(400, 50089, "Flow token expired: authentication failed. Have the user try signing "
                                          "in again.")
        if form.get("cancel"):
            # [CODE] "Error response" example: access_denied "the user canceled the authentication".
            return deliver(pending.redirect_uri, pending.response_mode, {
                "error": "access_denied", "error_description": "the user canceled the authentication",
                "state": pending.state})
        user = next((u for u in self.config.users if u.upn.lower() == form.get("user", "").lower()), None)
        if user is None:
            # [ERR] AADSTS16001 UserAccountSelectionInvalid
            return error_page(400, 16001, "The account you selected could not be used. Sign in again.")
        code = secrets.token_urlsafe(48)
        now = time.time()
        self.codes = {k: v for k, v in self.codes.items() if v.expires > now - 3600}
        session_id = str(uuid.uuid4())
        self.codes[code] = AuthorizationCode(
            client_id=pending.client_id, redirect_uri=pending.redirect_uri, scopes=pending.scopes,
            nonce=pending.nonce, code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method, user=user, session_id=session_id,
            auth_time=int(now), expires=now + CODE_LIFETIME)
        self.sign_ins += 1
        # [CODE] "Successful response": `code` and `state`. `session_state` (an opaque GUID of the login session) is
        # not in the v2.0 page's table but is in real v2.0 responses (e.g. OneDrive/onedrive-api-docs#1229:
        # "...nativeclient?code=…&session_state=…"). `client_info` (base64url JSON {uid, utid}) is answered when the
        # request asked `client_info=1`, as MSAL does; undocumented on Learn, read by MSAL Python for routing.
        params: dict[str, str | None] = {"code": code, "state": pending.state, "session_state": session_id}
        if pending.client_info:
            params["client_info"] = self.client_info(user)
        return deliver(pending.redirect_uri, pending.response_mode, params)

    def client_info(self, user: SandboxUser) -> str:
        return b64url(json.dumps({"uid": user.object_id, "utid": self.config.tenant_id}).encode())

    # --- /token, grant_type=authorization_code ----------------------------------------------------------------
    def redeem(self, client_id: str, form: dict[str, str]) -> JSONResponse:
        """The token answer for an authenticated client ([CODE] "Redeem a code for an access token")."""
        raw = form.get("code", "")
        if not raw:
            return json_error(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'code'.")
        code = self.codes.get(raw)
        if code is None or code.client_id != client_id:
            # Not in [ERR]'s wording for codes; AADSTS9002313 is what Entra answers for a malformed or unknown code
            # (issue threads, e.g. AzureAD/microsoft-authentication-library-for-js#3088).
            return json_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if code.redeemed:  # [ERR] AADSTS54005; codes are single use (RFC 6749 4.1.2)
            return json_error(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please "
                                                           "retry with a new valid code or use an existing refresh "
                                                           "token.")
        if code.expires < time.time():
            # [ERR] AADSTS70008 ExpiredOrRevokedGrant (wording as Entra answers it, e.g. snok/django-auth-adfs#245)
            return json_error(400, "invalid_grant", 70008, "The provided authorization code or refresh token has "
                                                           "expired due to inactivity. Send a new interactive "
                                                           "authorization request for this user and resource.")
        redirect_uri = form.get("redirect_uri", "")
        if not redirect_uri:  # [CODE] redirect_uri: required
            return json_error(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'redirect_uri'.")
        if redirect_uri != code.redirect_uri:
            # [CODE] redirect_uri: "The same redirect_uri value that was used to acquire the authorization_code."
            # Code and wording as quoted in PartnerCenterSamples/Reseller-Web-Application#73 (AADSTS50011); newer
            # answers may carry another number (unverified).
            return json_error(400, "invalid_grant", 50011, f"The reply address '{redirect_uri}' does not match the "
                                                           f"reply address '{code.redirect_uri}' provided when "
                                                           "requesting Authorization code.")
        if code.code_challenge:
            # [CODE] code_verifier: "Required if PKCE was used in the authorization code grant request";
            # [ERR] AADSTS501481 for a verifier that does not match (a missing one is answered alike: unverified).
            verifier = form.get("code_verifier", "")
            expected = s256(verifier) if code.code_challenge_method == "S256" else verifier
            if not verifier or not secrets.compare_digest(expected, code.code_challenge):
                return json_error(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge "
                                                                "supplied in the authorization request.")
        # A failed redemption above does not use the code up (unverified: Learn does not say).
        code.redeemed = True
        return JSONResponse(self.token_answer(code, form.get("scope", "").split() or code.scopes,
                                              form.get("client_info") == "1"),
                            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def refresh(self, client_id: str, form: dict[str, str]) -> JSONResponse:
        """[CODE] "Refresh the access token": a new access and ID token (and refresh token) for the same user."""
        raw = form.get("refresh_token", "")
        if not raw:
            return json_error(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'refresh_token'.")
        grant = self.refresh_tokens.get(raw)
        if grant is None or grant.client_id != client_id:
            return json_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        return JSONResponse(self.token_answer(grant, form.get("scope", "").split() or grant.scopes,
                                              form.get("client_info") == "1"),
                            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def token_answer(self, grant: AuthorizationCode, scopes: list[str], client_info: bool) -> dict[str, Any]:
        """[CODE] "Successful response": token_type, expires_in, scope, access_token, refresh_token (only with
        `offline_access`), id_token (only with `openid`); `ext_expires_in` as Entra also answers it (the
        client-credentials answer of sandbox/entra.py; MSAL reads it)."""
        user, now = grant.user, int(time.time())
        resources = [s for s in scopes if s not in OIDC_SCOPES]
        # [CODE] token `scope`: "The scopes must all be from a single resource, along with OIDC scopes"; the
        # audience is that resource (its scope without the permission), Graph when only OIDC scopes were asked.
        audience = GRAPH
        if resources:
            first = resources[0]
            audience = first.rsplit("/", 1)[0] if "://" in first and first.count("/") > 2 else GRAPH
        granted = [s for s in scopes if s != "offline_access"]
        access = self.tokens.sign({
            "aud": audience, "iss": self.tokens.issuer, "iat": now, "nbf": now, "exp": now + self.tokens.lifetime,
            "azp": grant.client_id, "appid": grant.client_id, "tid": self.config.tenant_id,
            "oid": user.object_id, "sub": self.pairwise_sub(grant.client_id, user), "name": user.name,
            "preferred_username": user.upn, "scp": " ".join(s for s in granted if s not in OIDC_SCOPES)
            or "openid profile email", "ver": "2.0", "uti": secrets.token_urlsafe(16),
        })
        answer: dict[str, Any] = {
            "token_type": "Bearer", "scope": " ".join(granted), "expires_in": self.tokens.lifetime,
            "ext_expires_in": self.tokens.lifetime, "access_token": access,
        }
        if "offline_access" in grant.scopes:
            refresh = secrets.token_urlsafe(64)
            self.refresh_tokens[refresh] = grant
            answer["refresh_token"] = refresh
        if "openid" in grant.scopes:
            answer["id_token"] = self.id_token(grant, now)
        if client_info:  # MSAL sends client_info=1 and builds its account (home_account_id uid.utid) from this
            answer["client_info"] = self.client_info(user)
        return answer

    def id_token(self, grant: AuthorizationCode, now: int) -> str:
        """A v2.0 ID token ([IDT] "Payload claims")."""
        user = grant.user
        claims: dict[str, Any] = {
            "aud": grant.client_id,  # [IDT] aud: "your app's Application ID"
            "iss": self.tokens.issuer,  # [IDT] iss: ends in /v2.0 from the v2.0 endpoint; = metadata `issuer`
            "iat": now, "nbf": now, "exp": now + ID_TOKEN_LIFETIME,
            "sub": self.pairwise_sub(grant.client_id, user),
            "tid": self.config.tenant_id,
            "ver": "2.0",  # [IDT] ver: "1.0 or 2.0"
            "sid": grant.session_id,  # [IDT] sid: the session, = the authorize answer's session_state here
            "uti": secrets.token_urlsafe(16),  # [IDT] uti: per-token identifier
            "auth_time": grant.auth_time,  # OIDC Core 2; Entra lists it in claims_supported
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce  # [IDT] nonce: "matches the parameter included in the original authorize
            # request" (MSAL sends a SHA-256 hash of its own nonce and compares the claim with that hash)
        if "profile" in grant.scopes:
            # [IDT] name, preferred_username and oid: "The profile scope is required to receive this claim."
            claims.update({"name": user.name, "preferred_username": user.upn, "oid": user.object_id})
        if "email" in grant.scopes:
            # [IDT] email: on the v2.0 endpoint an app "can also request the email OpenID Connect scope"
            claims["email"] = user.upn
        if user.roles:
            # [IDT] roles: "The set of roles that were assigned to the user who is logging in." [ROLES]: Entra "emits a
            # roles claim for each role that the user ... has been granted". Learn does not say outright that the
            # claim is absent for a user with no role; that it is left out (not an empty array) is what Entra does
            # in practice and is modelled here.
            claims["roles"] = list(user.roles)
        return self.tokens.sign(claims)

    def pairwise_sub(self, client_id: str, user: SandboxUser) -> str:
        """[IDT] sub: "a pairwise identifier ... unique to an application ID" (the derivation is Entra's secret; a
        43-character base64url hash, the shape Entra's `sub` values have)."""
        return b64url(hashlib.sha256(f"{self.config.tenant_id}|{client_id}|{user.object_id}".encode()).digest())

    # --- /logout ----------------------------------------------------------------------------------------------
    def logout(self, params: dict[str, str]) -> Response:
        """[OIDC] "Send a sign-out request": GET or POST; without post_logout_redirect_uri "the user is shown a
        generic message". The sandbox keeps no login session, so there is nothing else to clear."""
        target = params.get("post_logout_redirect_uri")
        body = page("Signed out", "<h1>You signed out of your account</h1>"
                                  "<p>It's a good idea to close all browser windows.</p>")
        if target and self.logout_redirect_allowed(target):
            return HTMLResponse(body, status_code=302, headers={"Location": target, **PAGE_HEADERS})
        return HTMLResponse(body, headers=PAGE_HEADERS)


def register(app: FastAPI, signin: SignIn, known: Callable[[str], bool],
             unknown_tenant_page: Callable[[str], Response]) -> None:
    """The sign-in routes on the Entra stand-in's app (`known(tenant)` checks the tenant)."""

    @app.get("/{tenant}/oauth2/v2.0/authorize", response_model=None)
    async def authorize(tenant: str, request: Request) -> Response:
        if not known(tenant):
            return unknown_tenant_page(tenant)
        return signin.authorize(tenant, dict(request.query_params))

    @app.post("/{tenant}/oauth2/v2.0/authorize/pick", response_model=None)
    async def pick(tenant: str, request: Request) -> Response:
        if not known(tenant):
            return unknown_tenant_page(tenant)
        return signin.pick(dict(parse_qsl((await request.body()).decode("utf-8", "replace"))))

    @app.get("/{tenant}/oauth2/v2.0/logout", response_model=None)
    @app.post("/{tenant}/oauth2/v2.0/logout", response_model=None)
    async def logout(tenant: str, request: Request) -> Response:
        if not known(tenant):
            return unknown_tenant_page(tenant)
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode("utf-8", "replace")))
        return signin.logout(params)


# --- HTML ---------------------------------------------------------------------------------------------------
# Plain HTML, no external resources, no script (except form_post's auto-submit, which has a button fallback).
PAGE_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}
STYLE = ("body{font-family:system-ui,sans-serif;margin:0;background:#f2f2f2;color:#1b1b1b}"
         "main{max-width:28rem;margin:3rem auto;background:#fff;padding:2rem;border:1px solid #8a8a8a}"
         "h1{font-size:1.5rem;margin-top:0}ul{list-style:none;padding:0}li{margin:.5rem 0}"
         "button{width:100%;text-align:left;padding:.75rem;font:inherit;background:#fff;color:#1b1b1b;"
         "border:1px solid #5e5e5e;cursor:pointer}button:hover,button:focus{background:#e6f0fa;"
         "outline:3px solid #0067b8}.hint{border-width:3px}.name{font-weight:600;display:block}"
         ".small{font-size:.9rem;color:#3b3b3b}")


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>")


def error_page(status: int, code: int, description: str) -> HTMLResponse:
    """Errors found before the redirect URI is known to be valid are shown on Entra's own page (RFC 6749 4.1.2.1:
    the server "MUST NOT automatically redirect the user-agent to the invalid redirection URI")."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    body = (f"<h1>Sorry, but we're having trouble signing you in.</h1>"
            f'<p id="error" data-code="AADSTS{code}">AADSTS{code}: {html.escape(description)}</p>'
            f'<p class="small">Correlation ID: {uuid.uuid4()}<br>Timestamp: {now}</p>')
    return HTMLResponse(page("Sign in to your account", body), status_code=status, headers=PAGE_HEADERS)


def login_page(tenant: str, flow: str, config: SandboxConfig, pending: PendingAuthorization) -> HTMLResponse:
    """The user picker: one submit button per user, `name="user"` `value="<upn>"`; `login_hint` puts its user first,
    marked and focused ([CODE] login_hint "pre-fill[s] the username")."""
    hint = (pending.login_hint or "").lower()
    users = sorted(config.users, key=lambda u: u.upn.lower() != hint)
    items = []
    for user in users:
        roles = ", ".join(user.roles) if user.roles else "no app role"
        hinted = user.upn.lower() == hint
        marks = ' class="hint" autofocus' if hinted else ""
        suggested = " · suggested" if hinted else ""
        items.append(
            f'<li><button type="submit" name="user" value="{html.escape(user.upn)}"{marks}>'
            f'<span class="name">{html.escape(user.name)}</span> '
            f'<span class="small">{html.escape(user.upn)} · {html.escape(roles)}{suggested}</span></button></li>')
    body = (f"<h1>Pick an account</h1>"
            f'<p class="small">bcsync sandbox — Microsoft Entra stand-in. Sign in to application '
            f"{html.escape(pending.client_id)} as one of the tenant's users (no password).</p>"
            f'<form method="post" action="/{html.escape(tenant)}/oauth2/v2.0/authorize/pick">'
            f'<input type="hidden" name="flow" value="{flow}">'
            f'<ul aria-label="Accounts">{"".join(items)}</ul>'
            f'<p><button type="submit" name="cancel" value="1">Cancel sign-in</button></p></form>')
    return HTMLResponse(page("Sign in to your account", body), headers=PAGE_HEADERS)


def deliver(redirect_uri: str, mode: str, params: dict[str, str | None]) -> Response:
    """The authorization response by `response_mode` ([CODE]: query — in the redirect URI's query; fragment; form_post
    — "Executes a POST containing the code to your redirect URI")."""
    values = {k: v for k, v in params.items() if v is not None}
    parts = urlsplit(redirect_uri)
    # [REPLY]: a redirect URI without a path "is returned with a trailing slash ... only when the response mode
    # is query or fragment".
    path = parts.path or "/"
    if mode == "form_post":
        nonce = secrets.token_urlsafe(16)
        fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in values.items())
        body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Working...</title></head><body>'
                f'<form method="post" action="{html.escape(redirect_uri)}">{fields}'
                f"<noscript><p>Script is disabled. Select Continue.</p></noscript>"
                f'<button type="submit">Continue</button></form>'
                f'<script nonce="{nonce}">document.forms[0].submit()</script></body></html>')
        headers = {**PAGE_HEADERS, "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'"}
        return HTMLResponse(body, headers=headers)
    if mode == "fragment":
        location = urlunsplit((parts.scheme, parts.netloc, path, parts.query, urlencode(values)))
    else:
        query = "&".join(q for q in (parts.query, urlencode(values)) if q)
        location = urlunsplit((parts.scheme, parts.netloc, path, query, ""))
    return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})


def _described(code: int, description: str) -> str:
    """error_description of an authorization error: "AADSTS<code>: <message> Trace ID: … Correlation ID: …
    Timestamp: …", as in JSON errors."""
    return str(error_body("", code, description)["error_description"])


def _same_reply_url(uri: str, registered: str) -> bool:
    a, b = urlsplit(uri), urlsplit(registered)
    if (a.hostname or "") in LOOPBACK_HOSTS and a.hostname == b.hostname:
        # [REPLY] "Localhost exceptions": http is allowed there, and the port is ignored.
        return a.scheme == b.scheme and a.path == b.path and a.query == b.query
    return uri == registered


def _same_origin(uri: str, registered: str) -> bool:
    a, b = urlsplit(uri), urlsplit(registered)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
