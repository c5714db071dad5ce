"""Microsoft Entra stand-in (HTTPS): OpenID metadata, JWKS, the token endpoint (client credentials, and the
authorization code flow of user sign-in with its login page and logout, sandbox/entra_signin.py).

It answers only the configured tenant and client, in Entra's JSON error format, so that the real MSAL
library works against it (`instance_discovery=False`, authority `https://127.0.0.1:<port>/<tenant>`).
Any resource may be asked for (`<resource>/.default`): the BC and Dataverse stand-ins check the audience.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from sandbox.config import SandboxConfig
from sandbox.entra_signin import SignIn, error_page, json_error, register
from sandbox.tokens import TokenIssuer

entra_error = json_error  # Entra's JSON error body (sandbox/entra_signin.py)


def create_app(config: SandboxConfig, tokens: TokenIssuer) -> FastAPI:
    app = FastAPI(title="bcsync sandbox: Microsoft Entra", openapi_url=None)
    app.state.tokens = tokens
    app.state.issued = 0
    app.state.signin = signin = SignIn(config, tokens)
    host = tokens.issuer_host

    def known(tenant: str) -> bool:
        return tenant.lower() == config.tenant_id.lower()

    def unknown_tenant(tenant: str) -> JSONResponse:
        return entra_error(400, "invalid_request", 90002,
                           f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")

    def metadata(tenant: str) -> dict[str, Any]:
        base = f"{host}/{config.tenant_id}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": tokens.issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{host}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            # Entra's live document lists these claims (as quoted in public threads; Learn's sample is truncated)
            # and, like it, no `code_challenge_methods_supported` although PKCE works (S256 and plain, "Microsoft
            # identity platform and OAuth 2.0 authorization code flow"; e.g. modelcontextprotocol/typescript-sdk#832
            # reports the key missing): clients must not depend on it. The sandbox adds `oid` and `roles`, which
            # Entra's list leaves out although its ID tokens carry them ("ID token claims reference").
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                                 "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email",
                                 "oid", "roles"],
            "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net", "msgraph_host": "graph.microsoft.com",
        }

    @app.get("/{tenant}/v2.0/.well-known/openid-configuration", response_model=None)
    @app.get("/{tenant}/.well-known/openid-configuration", response_model=None)
    async def openid(tenant: str) -> dict[str, Any] | JSONResponse:
        return metadata(tenant) if known(tenant) else unknown_tenant(tenant)

    @app.get("/{tenant}/discovery/v2.0/keys", response_model=None)
    @app.get("/{tenant}/discovery/keys", response_model=None)
    async def keys(tenant: str) -> dict[str, Any] | JSONResponse:
        return {"keys": [tokens.public_jwk()]} if known(tenant) else unknown_tenant(tenant)

    @app.post("/{tenant}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request) -> JSONResponse:
        if not known(tenant):
            return unknown_tenant(tenant)
        form = _form(await request.body())
        basic = _basic(request.headers.get("authorization"))
        client_id = form.get("client_id") or (basic[0] if basic else "")
        secret = form.get("client_secret") or (basic[1] if basic else "")
        grant, scope = form.get("grant_type", ""), form.get("scope", "")
        if not grant:
            return entra_error(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'grant_type'.")
        if grant not in ("client_credentials", "authorization_code", "refresh_token"):
            return entra_error(400, "unsupported_grant_type", 70003,
                               f"The app requested an unsupported grant type '{grant}'.")
        if not client_id:
            return entra_error(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'client_id'.")
        if client_id != config.client_id:
            return entra_error(400, "unauthorized_client", 700016,
                               f"Application with identifier '{client_id}' was not found in the directory "
                               f"'{config.tenant_id}'.")
        if grant != "client_credentials" and not secret and not form.get("client_assertion"):
            # "Microsoft Entra authentication and authorization error codes": AADSTS7000218
            return entra_error(401, "invalid_client", 7000218, "The request body must contain the following "
                                                               "parameter: 'client_assertion' or 'client_secret'.")
        if not secrets.compare_digest(secret.encode(), config.client_secret.encode()):
            return entra_error(401, "invalid_client", 7000215,
                               "Invalid client secret provided. Ensure the secret being sent in the request "
                               f"is the client secret value, not the client secret ID, for a secret added to "
                               f"app '{client_id}'.")
        if grant == "authorization_code":
            return signin.redeem(client_id, form)
        if grant == "refresh_token":
            return signin.refresh(client_id, form)
        if not scope:
            return entra_error(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'scope'.")
        resources = scope.split()
        if len(resources) != 1 or not resources[0].endswith("/.default") or "://" not in resources[0]:
            return entra_error(400, "invalid_scope", 1002012,
                               f"The provided value for scope {scope} is not valid. Client credential flows "
                               "must have a scope value with /.default suffixed to the resource identifier "
                               "(application ID URI).")
        access_token, expires_in = tokens.issue(client_id, resources[0])
        app.state.issued += 1
        return JSONResponse({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                             "access_token": access_token}, headers={"Cache-Control": "no-store, no-cache"})

    def unknown_tenant_page(tenant: str) -> HTMLResponse:
        return error_page(400, 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                                      "tenant ID.")

    register(app, signin, known, unknown_tenant_page)

    @app.get("/_sandbox/state")
    async def state() -> dict[str, Any]:
        return {"tenantId": config.tenant_id, "clientId": config.client_id, "issuer": tokens.issuer,
                "tokenLifetime": tokens.lifetime, "tokensIssued": app.state.issued, "signIns": signin.sign_ins,
                "replyUrls": list(config.reply_urls),
                "users": [{"upn": u.upn, "name": u.name, "oid": u.object_id, "roles": list(u.roles)}
                          for u in config.users]}

    @app.post("/_sandbox/tokens")
    async def token_settings(request: Request) -> dict[str, Any]:
        """{"lifetime": seconds} for tokens issued from now on (short lives test token refresh)."""
        body = await request.json()
        if "lifetime" in body:
            tokens.lifetime = int(body["lifetime"])
        return await state()

    return app


def _form(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in raw.decode("utf-8", "replace").split("&"):
        if pair:
            key, _, value = pair.partition("=")
            out[unquote_plus(key)] = unquote_plus(value)
    return out


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote_plus(user), unquote_plus(password)
