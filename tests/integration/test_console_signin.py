"""Signing in to the console for real: the api (uvicorn, MSAL) against the sandbox's Entra (authorization code flow
with PKCE, a login page with a user picker), driven over HTTP the way a browser would (the browser itself is
tests/browser/)."""

from __future__ import annotations

import re
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox.config import SandboxConfig
from tests.conftest import delete_namespace
from tests.harness import make_settings, running_api
from tests.sandbox_thread import start_sandbox_thread

SESSION_SECRET = "console-signin-test-session-secret-0123456789"


@dataclass
class World:
    api: str
    sandbox: SandboxConfig


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxConfig]:
    config, stop = start_sandbox_thread(tmp_path)
    # MSAL (requests) and PyJWT's key fetch (urllib) trust the sandbox's certificate authority, as in the demo.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", config.ca_file)
    monkeypatch.setenv("SSL_CERT_FILE", config.ca_file)
    try:
        yield config
    finally:
        stop()


@pytest.fixture
async def world(tmp_path: Path, sandbox: SandboxConfig) -> AsyncIterator[World]:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'signin.db'}", f"test-signin-{uuid.uuid4().hex[:8]}",
                             tenant_id=sandbox.tenant_id, client_id=sandbox.client_id,
                             client_secret=sandbox.client_secret, authority_host=f"https://127.0.0.1:{sandbox.entra_port}",
                             console_session_secret=SESSION_SECRET)
    settings.public_url = f"http://127.0.0.1:{settings.port}"  # type: ignore[assignment]
    try:
        async with running_api(settings) as (url, _app):
            yield World(url, sandbox)
    finally:
        await delete_namespace(settings.namespace, settings.retry_delay_seconds)


def browser(world: World) -> httpx.AsyncClient:
    """One cookie jar for the api and the sandbox's Entra, as a browser has; redirects followed by hand."""
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=world.sandbox.ca_file), follow_redirects=False,
                             timeout=20)


async def sign_in(client: httpx.AsyncClient, world: World, user: str, start: str = "/console/") -> httpx.Response:
    """Open `start`, follow the sign-in to Entra's picker, pick `user`, follow back; the last answer."""
    answer = await client.get(world.api + start)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login")
    answer = await client.get(world.api + answer.headers["location"])
    assert answer.status_code == 303
    authorize = answer.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]  # PKCE
    assert query["redirect_uri"] == [world.api + "/console/auth/callback"]
    picker = await client.get(authorize)
    assert picker.status_code == 200
    flow = re.search(r'name="flow" value="([^"]+)"', picker.text)
    action = re.search(r'<form[^>]*action="([^"]+)"', picker.text)
    assert flow and action and f'value="{user}"' in picker.text
    picked = await client.post(httpx.URL(authorize).join(action.group(1)), data={"flow": flow.group(1), "user": user})
    assert picked.status_code == 302
    callback = picked.headers["location"]
    assert callback.startswith(world.api + "/console/auth/callback?")
    answer = await client.get(callback)
    while answer.status_code in (302, 303, 307):
        answer = await client.get(httpx.URL(str(answer.url)).join(answer.headers["location"]))
    return answer


async def test_an_operator_signs_in_comes_back_where_they_were_and_signs_out(world: World) -> None:
    async with browser(world) as client:
        page = await sign_in(client, world, "operator@contoso.example", start="/console/records?q=adatum")
        assert page.status_code == 200
        assert str(page.url) == world.api + "/console/records?q=adatum"
        assert "Oscar Operator" in page.text and "role-operator" in page.text
        assert 'action="/console/records/couple"' in page.text  # an Operator's form
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        signed_out = await client.post(world.api + "/console/logout", data={"csrf": csrf.group(1)})
        assert signed_out.status_code == 303
        entra = signed_out.headers["location"]
        assert entra.startswith(f"https://127.0.0.1:{world.sandbox.entra_port}/{world.sandbox.tenant_id}"
                                "/oauth2/v2.0/logout?post_logout_redirect_uri=")
        back = await client.get(entra)
        assert back.status_code == 302 and back.headers["location"] == world.api + "/console/signed-out"
        assert "You have signed out" in (await client.get(back.headers["location"])).text
        again = await client.get(world.api + "/console/")
        assert again.status_code == 303 and again.headers["location"].startswith("/console/login")


async def test_the_session_cookie_is_httponly_samesite_and_scoped_to_the_console(world: World) -> None:
    async with browser(world) as client:
        await client.get(world.api + "/console/login")
        cookie = next(c for c in client.cookies.jar if c.name == "bcsync_console")
        assert cookie.path == "/console"
        raw = (await client.get(world.api + "/console/login")).headers["set-cookie"].lower()
        assert "httponly" in raw and "samesite=lax" in raw and "path=/console" in raw
        assert "secure" not in raw  # the public URL is http here; https makes it Secure (unit-tested)


async def test_a_reader_signs_in_without_actions_and_a_user_without_a_role_gets_403(world: World) -> None:
    async with browser(world) as client:
        page = await sign_in(client, world, "reader@contoso.example")
        assert page.status_code == 200 and "Rita Reader" in page.text
        assert "role-reader" in page.text
    async with browser(world) as client:
        page = await sign_in(client, world, "nobody@contoso.example")
        assert page.status_code == 403
        assert "nobody@contoso.example has no role in bcsync" in page.text


async def test_an_answer_that_belongs_to_no_sign_in_of_this_browser_is_refused(world: World) -> None:
    async with browser(world) as victim, browser(world) as attacker:
        # The attacker starts a sign-in and gets a code for their own account...
        await attacker.get(world.api + "/console/login")
        answer = await attacker.get(world.api + "/console/login")
        picker = await attacker.get(answer.headers["location"])
        flow = re.search(r'name="flow" value="([^"]+)"', picker.text)
        action = re.search(r'<form[^>]*action="([^"]+)"', picker.text)
        assert flow and action
        picked = await attacker.post(httpx.URL(answer.headers["location"]).join(action.group(1)),
                                     data={"flow": flow.group(1), "user": "operator@contoso.example"})
        # ... and makes the victim's browser open the callback (login CSRF): the victim started no sign-in.
        refused = await victim.get(picked.headers["location"])
        assert refused.status_code == 400 and "no sign-in waiting" in refused.text
        # A victim who did start one gets the state mismatch refused.
        await victim.get(world.api + "/console/login")
        refused = await victim.get(picked.headers["location"])
        assert refused.status_code == 401 and "Sign-in failed" in refused.text
        assert (await victim.get(world.api + "/console/")).status_code == 303  # still not signed in
