"""User sign-in against the Entra stand-in, live over HTTPS, driven by the real MSAL library: the authorization code
flow with PKCE (initiate_auth_code_flow → the login page's user picker → redirect → acquire_token_by_auth_code_flow),
the ID token's claims (roles, name, preferred_username, nonce), Entra's errors, and sign-out."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import msal
import pytest

from sandbox.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID, SandboxConfig
from sandbox.entra_signin import SignIn, s256
from sandbox.tokens import TokenIssuer
from tests.sandbox.conftest import Live

# MSAL warns that form_post is safer than the query response mode; these tests use both on purpose (the console
# uses query: service/console/auth.py says why).
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")

REDIRECT = "http://127.0.0.1:18765/console/auth/callback"  # nothing listens there: redirects are read, not followed


class Page(HTMLParser):
    """The forms of a page: action, hidden fields, and submit buttons (name, value, text, attributes)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.buttons: list[dict[str, Any]] = []
        self._button: dict[str, Any] | None = None
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "hidden": {}})
        elif tag == "input" and a.get("type") == "hidden" and self.forms:
            self.forms[-1]["hidden"][a["name"]] = a.get("value", "")
        elif tag == "button":
            self._button = {**a, "text": ""}
            self.buttons.append(self._button)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._button is not None:
            self._button["text"] += data


@pytest.fixture(autouse=True)
def sandbox_ca(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """MSAL (requests) trusts the sandbox's CA. REQUESTS_CA_BUNDLE, when set, wins over MSAL's `verify=` argument
    (requests merges the environment into each request), so it is the variable to point at the CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", live.config.ca_file)


def msal_app(live: Live, client_id: str = DEMO_CLIENT_ID) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(client_id, client_credential=DEMO_CLIENT_SECRET,
                                              authority=live.authority, instance_discovery=False)


def login_page(http: httpx.Client, auth_uri: str) -> Page:
    response = http.get(auth_uri)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


def pick(live: Live, http: httpx.Client, page: Page, user: str) -> httpx.Response:
    """Submit the picker as a browser would: POST the form's hidden fields plus the clicked button's name=value."""
    form = page.forms[0]
    assert form["method"] == "post"
    button = next(b for b in page.buttons if b.get("name") == "user" and b.get("value") == user)
    assert user in button["text"]  # the button is labelled with the account
    url = f"https://127.0.0.1:{live.config.entra_port}{form['action']}"
    return http.post(url, data={**form["hidden"], "user": user})


def query_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def sign_in(live: Live, user: str, **flow_args: Any) -> tuple[msal.ConfidentialClientApplication, dict[str, Any],
                                                              dict[str, str]]:
    """Run the first leg: returns the MSAL app, its flow and the auth response (the redirect's query)."""
    app = msal_app(live)
    flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=REDIRECT, **flow_args)
    with live.https() as http:
        answer = pick(live, http, login_page(http, flow["auth_uri"]), user)
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return app, flow, query_of(answer)


@pytest.mark.parametrize(("upn", "name", "roles"), [
    ("reader@contoso.example", "Rita Reader", ["Reader"]),
    ("operator@contoso.example", "Oscar Operator", ["Operator"]),
])
def test_msal_signs_a_user_in_with_roles(live: Live, upn: str, name: str, roles: list[str]) -> None:
    app, flow, auth_response = sign_in(live, upn)
    assert auth_response["state"] == flow["state"]
    assert set(auth_response) >= {"code", "state", "session_state", "client_info"}
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)  # MSAL checks state and the nonce
    assert "error" not in result, result
    claims = result["id_token_claims"]
    assert claims["roles"] == roles and claims["name"] == name and claims["preferred_username"] == upn
    # MSAL sends SHA-256(hex) of its nonce; the ID token carries what was sent
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert claims["aud"] == DEMO_CLIENT_ID and claims["tid"] == DEMO_TENANT_ID and claims["ver"] == "2.0"
    assert claims["iss"] == f"{live.authority}/v2.0"
    assert claims["oid"] in {u.object_id for u in live.config.users} and len(claims["sub"]) == 43
    assert result["token_type"] == "Bearer" and result["access_token"] and result["refresh_token"]
    # the ID token verifies with the metadata's JWKS (MSAL itself does not validate ID tokens)
    with live.https() as http:
        meta = http.get(f"{live.authority}/v2.0/.well-known/openid-configuration").json()
        jwk = http.get(meta["jwks_uri"]).json()["keys"][0]
    header = jwt.get_unverified_header(result["id_token"])
    assert header["kid"] == jwk["kid"] and header["alg"] == "RS256"
    verified = jwt.decode(result["id_token"], jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=DEMO_CLIENT_ID,
                          issuer=meta["issuer"])
    assert verified["roles"] == roles
    with live.https() as http:  # the refresh token ("offline_access", which MSAL always asks) gets new tokens
        refreshed = http.post(meta["token_endpoint"], data={
            "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "grant_type": "refresh_token",
            "refresh_token": result["refresh_token"], "scope": "openid profile offline_access"})
    assert refreshed.status_code == 200, refreshed.text
    assert jwt.decode(refreshed.json()["id_token"], options={"verify_signature": False})["roles"] == roles
    # MSAL built an account from client_info
    accounts = app.get_accounts()
    assert [a["username"] for a in accounts] == [upn]
    assert accounts[0]["home_account_id"] == f"{claims['oid']}.{DEMO_TENANT_ID}"


def test_user_without_roles_has_no_roles_claim(live: Live) -> None:
    app, flow, auth_response = sign_in(live, "nobody@contoso.example")
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert "error" not in result, result
    assert "roles" not in result["id_token_claims"]
    assert result["id_token_claims"]["name"] == "Nora Noroles"


def test_picker_page_lists_every_user_and_honours_login_hint(live: Live) -> None:
    app = msal_app(live)
    flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=REDIRECT, login_hint="operator@contoso.example")
    with live.https() as http:
        response = http.get(flow["auth_uri"])
    page = Page(response.text)
    users = [b["value"] for b in page.buttons if b.get("name") == "user"]
    assert users == ["operator@contoso.example", "reader@contoso.example", "nobody@contoso.example"]
    assert "autofocus" in page.buttons[0]
    assert all(b.get("type") == "submit" for b in page.buttons)
    # only an opaque id travels in the form: the request's parameters stay server-side
    assert set(page.forms[0]["hidden"]) == {"flow"}
    assert "<script" not in response.text and "http" not in page.forms[0]["action"]
    assert '<html lang="en">' in response.text and response.headers["x-frame-options"] == "DENY"


def test_wrong_code_verifier_is_refused(live: Live) -> None:
    app, flow, auth_response = sign_in(live, "reader@contoso.example")
    right = flow["code_verifier"]
    flow["code_verifier"] = right[:-4] + "AAAA"
    result = app.acquire_token_by_auth_code_flow(dict(flow), auth_response)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [501481]
    assert "Code_Verifier does not match the code_challenge" in result["error_description"]
    flow["code_verifier"] = right  # a failed redemption did not use the code up
    assert "id_token" in app.acquire_token_by_auth_code_flow(flow, auth_response)


def test_code_is_single_use(live: Live) -> None:
    app, flow, auth_response = sign_in(live, "reader@contoso.example")
    assert "id_token" in app.acquire_token_by_auth_code_flow(dict(flow), auth_response)
    again = app.acquire_token_by_auth_code_flow(dict(flow), auth_response)
    assert again["error"] == "invalid_grant" and again["error_codes"] == [54005]
    assert "already redeemed" in again["error_description"]


def test_redirect_uri_must_match_at_redemption(live: Live) -> None:
    app, flow, auth_response = sign_in(live, "reader@contoso.example")
    flow["redirect_uri"] = "http://127.0.0.1:18765/console/auth/other"
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [50011]


def test_unregistered_redirect_uri_is_an_error_page_not_a_redirect(live: Live) -> None:
    app = msal_app(live)
    with live.https() as http:
        for uri in ("https://evil.example/console/auth/callback", "http://127.0.0.1:18765/elsewhere"):
            flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=uri)
            response = http.get(flow["auth_uri"])
            assert response.status_code == 400 and "location" not in response.headers
            assert "AADSTS50011" in response.text and "does not match the redirect URIs" in response.text


def test_unknown_client_is_an_error_page(live: Live) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    flow = msal_app(live, other).initiate_auth_code_flow(scopes=[], redirect_uri=REDIRECT)
    with live.https() as http:
        response = http.get(flow["auth_uri"])
        assert response.status_code == 400 and "AADSTS700016" in response.text and other in response.text
        token = http.post(f"{live.authority}/oauth2/v2.0/token", data={
            "client_id": other, "client_secret": "x", "grant_type": "authorization_code", "code": "abc",
            "redirect_uri": REDIRECT})
    assert token.status_code == 400 and token.json()["error"] == "unauthorized_client"


def test_errors_after_the_redirect_uri_is_valid_go_back_to_it(live: Live) -> None:
    app = msal_app(live)
    flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=REDIRECT, prompt="none")
    with live.https() as http:
        answer = query_of(http.get(flow["auth_uri"]))
        assert answer["error"] == "login_required" and answer["state"] == flow["state"]
        assert answer["error_description"].startswith("AADSTS50058:")
        assert app.acquire_token_by_auth_code_flow(flow, answer)["error"] == "login_required"
        bad = http.get(f"{live.authority}/oauth2/v2.0/authorize?" + urlencode({
            "client_id": DEMO_CLIENT_ID, "response_type": "token", "redirect_uri": REDIRECT, "scope": "openid",
            "state": "s1"}))
        assert query_of(bad)["error"] == "unsupported_response_type" and query_of(bad)["state"] == "s1"
        # the user cancels on the picker
        flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=REDIRECT)
        page = login_page(http, flow["auth_uri"])
        cancelled = query_of(http.post(f"https://127.0.0.1:{live.config.entra_port}{page.forms[0]['action']}",
                                       data={**page.forms[0]["hidden"], "cancel": "1"}))
        assert cancelled["error"] == "access_denied" and cancelled["state"] == flow["state"]


def test_picker_form_cannot_be_replayed_or_forged(live: Live) -> None:
    app = msal_app(live)
    flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=REDIRECT)
    with live.https() as http:
        page = login_page(http, flow["auth_uri"])
        assert pick(live, http, page, "reader@contoso.example").status_code == 302
        replay = pick(live, http, page, "operator@contoso.example")
        assert replay.status_code == 400 and "AADSTS50089" in replay.text
        forged = http.post(f"https://127.0.0.1:{live.config.entra_port}{page.forms[0]['action']}",
                           data={"flow": "made-up", "user": "operator@contoso.example"})
        assert forged.status_code == 400 and "location" not in forged.headers


def test_pkce_is_optional_for_a_confidential_client_and_plain_is_supported(live: Live) -> None:
    verifier = "v" * 50
    with live.https() as http:
        for extra, token_extra in (({}, {}), ({"code_challenge": verifier}, {"code_verifier": verifier}),
                                   ({"code_challenge": s256(verifier), "code_challenge_method": "S256"},
                                    {"code_verifier": verifier})):
            url = f"{live.authority}/oauth2/v2.0/authorize?" + urlencode({
                "client_id": DEMO_CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT,
                "scope": "openid profile", "state": "st", **extra})
            code = query_of(pick(live, http, login_page(http, url), "operator@contoso.example"))["code"]
            token = http.post(f"{live.authority}/oauth2/v2.0/token", data={
                "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "grant_type": "authorization_code",
                "code": code, "redirect_uri": REDIRECT, "scope": "openid profile", **token_extra})
            assert token.status_code == 200, (extra, token.text)
            body = token.json()
            assert "refresh_token" not in body  # no offline_access asked
            assert set(body) >= {"token_type", "scope", "expires_in", "ext_expires_in", "access_token", "id_token"}
            assert "nonce" not in jwt.decode(body["id_token"], options={"verify_signature": False})
        short = http.get(f"{live.authority}/oauth2/v2.0/authorize?" + urlencode({
            "client_id": DEMO_CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT, "scope": "openid",
            "code_challenge": "abc", "code_challenge_method": "S256"}))
        assert "AADSTS501491" in query_of(short)["error_description"]


def test_form_post_response_mode(live: Live) -> None:
    app = msal_app(live)
    flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=REDIRECT, response_mode="form_post")
    with live.https() as http:
        answer = pick(live, http, login_page(http, flow["auth_uri"]), "reader@contoso.example")
    assert answer.status_code == 200
    form = Page(answer.text).forms[0]
    assert form["action"] == REDIRECT and form["method"] == "post"
    assert "id_token" in app.acquire_token_by_auth_code_flow(flow, form["hidden"])


def test_logout_redirects_only_to_an_allowed_address(live: Live) -> None:
    with live.https() as http:
        meta = http.get(f"{live.authority}/v2.0/.well-known/openid-configuration").json()
        back = "http://127.0.0.1:18765/console/"
        out = http.get(meta["end_session_endpoint"], params={"post_logout_redirect_uri": back})
        assert out.status_code == 302 and out.headers["location"] == back and "You signed out" in out.text
        stay = http.get(meta["end_session_endpoint"], params={"post_logout_redirect_uri": "https://evil.example/"})
        assert stay.status_code == 200 and "location" not in stay.headers and "You signed out" in stay.text
        assert http.get(meta["end_session_endpoint"]).status_code == 200


def test_metadata_describes_sign_in(live: Live) -> None:
    with live.https() as http:
        meta = http.get(f"{live.authority}/v2.0/.well-known/openid-configuration").json()
    assert meta["authorization_endpoint"] == f"{live.authority}/oauth2/v2.0/authorize"
    assert meta["end_session_endpoint"] == f"{live.authority}/oauth2/v2.0/logout"
    assert {"nonce", "name", "preferred_username", "roles", "oid", "tid"} <= set(meta["claims_supported"])
    assert {"openid", "profile", "email", "offline_access"} <= set(meta["scopes_supported"])
    assert "code_challenge_methods_supported" not in meta  # as Entra's document: PKCE works but is not advertised


def test_registered_reply_urls_match_exactly_except_loopback_ports() -> None:
    config = SandboxConfig(reply_urls=("http://localhost/console/auth/callback",
                                       "https://bcsync.contoso.example/console/auth/callback"))
    signin = SignIn(config, TokenIssuer(tenant_id=DEMO_TENANT_ID))
    assert signin.reply_url_allowed("http://localhost:5123/console/auth/callback")  # port ignored on loopback
    assert signin.reply_url_allowed("https://bcsync.contoso.example/console/auth/callback")
    assert not signin.reply_url_allowed("https://bcsync.contoso.example:8443/console/auth/callback")
    assert not signin.reply_url_allowed("https://bcsync.contoso.example/Console/auth/callback")  # case-sensitive
    assert not signin.reply_url_allowed("http://127.0.0.1:5123/console/auth/callback")  # another host
    assert not signin.reply_url_allowed("http://localhost:5123/console/auth/callback/x")
    assert signin.logout_redirect_allowed("https://bcsync.contoso.example/console/")
    assert not signin.logout_redirect_allowed("https://evil.example/console/")
    lenient = SignIn(SandboxConfig(), TokenIssuer(tenant_id=DEMO_TENANT_ID))
    assert lenient.reply_url_allowed("http://127.0.0.1:40123/console/auth/callback")
    assert not lenient.reply_url_allowed("http://10.0.0.1/console/auth/callback")


def test_reply_urls_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCSYNC_SANDBOX_REPLY_URLS", " https://a.example/cb , http://localhost/console/auth/callback")
    assert SandboxConfig.from_env().reply_urls == ("https://a.example/cb", "http://localhost/console/auth/callback")
