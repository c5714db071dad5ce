"""The console's access rules on every page, its overview and its records pages, through the real api (uvicorn)
with a signed session cookie (the sign-in itself, through the sandbox's Entra, is tests/integration/
test_console_signin.py; the browser tests are tests/browser/)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from schemas.vocabulary import Decision, FieldChange, Result, Side
from service.store import couplings, history
from service.store.db import Database
from service.store.migrate import upgrade_async
from tests.conftest import delete_namespace
from tests.console_session import NOBODY, OPERATOR, READER, SESSION_SECRET, session_cookie, user
from tests.harness import ADMIN_TOKEN, make_settings, running_api

BC = "5f1e0000-0000-4000-8000-00000000000a"
DV = "8a2c0000-0000-4000-8000-00000000000b"
CLIENT_SECRET = "console-test-client-secret-do-not-show"
PAGES = ["/console/", "/console/errors", "/console/records", "/console/records?q=adatum",
         f"/console/records/CUSTOMER/bc/{BC}", "/console/mappings", "/console/mappings/CUSTOMER",
         "/console/full-sync", "/console/subscriptions", "/console/setup-check"]
ACTIONS = ["/console/records/couple", "/console/records/couplings/1/decouple", "/console/errors/1/retry",
           "/console/errors/retry-all", "/console/errors/1/dismiss", "/console/mappings/CUSTOMER/hold",
           "/console/mappings/CUSTOMER/resume", "/console/mappings/CUSTOMER", "/console/full-sync",
           "/console/full-sync/lines/CUSTOMER/restart", "/console/subscriptions/refresh"]
# Pages that ask Business Central or Dataverse (not configured here: they answer a page that says so).
ASKS_SYSTEMS = {"/console/full-sync", "/console/subscriptions", "/console/setup-check"}


@dataclass
class Console:
    url: str
    db: Database

    def client(self, roles: tuple[str, ...] | None = None, csrf: str = "csrf-token") -> httpx.AsyncClient:
        """A browser; with `roles`, signed in as a user with those app roles (a session cookie, no Entra)."""
        client = httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=20)
        if roles is not None:
            client.cookies.set("bcsync_console", session_cookie({"user": user(roles), "csrf": csrf}), path="/console")
        return client


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'console.db'}"
    await upgrade_async(url)
    db = Database(url)
    now = datetime.now(UTC)
    async with db.session() as session:
        await couplings.save(session, "CUSTOMER", BC, DV, last_result="coupled")
        for minute, (decision, result, lag) in enumerate([(Decision.APPLIED, Result.MODIFIED, 1500),
                                                          (Decision.ECHO, Result.UNCHANGED, None),
                                                          (Decision.CONFLICT_LOST, Result.MODIFIED, 4000)]):
            row = history.entry(
                mapping="CUSTOMER", side=Side.DATAVERSE, record_id=DV, bc_id=BC, dataverse_id=DV, kind="live",
                result=result, decision=decision, reason=f"reason {decision.value}", events=[], sensitive={"email"},
                changes=[FieldChange(Side.BC, "phoneNumber", "555-0100", f"555-01{minute}9"),
                         FieldChange(Side.BC, "email", "a@adatum.example", "b@adatum.example")],
                correlation_id=f"run-{minute}", duration_ms=100, label="10000 Adatum Corporation",
                terms=["10000", "info@adatum.example"], lag_ms=lag)
            row.at = now - timedelta(minutes=30 - minute)
            session.add(row)
    settings = make_settings(url, f"test-console-{uuid.uuid4().hex[:8]}", tenant_id=str(uuid.uuid4()),
                             client_id=str(uuid.uuid4()), client_secret=CLIENT_SECRET,
                             console_session_secret=SESSION_SECRET)
    try:
        async with running_api(settings) as (api_url, _app):
            yield Console(api_url, db)
    finally:
        await db.close()
        await delete_namespace(settings.namespace, settings.retry_delay_seconds)


async def test_no_page_or_form_works_without_sign_in(console: Console) -> None:
    async with console.client() as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"  # the admin token is for the API and CLI only
        for path in PAGES:
            answer = await client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/login?next=%2Fconsole"), path
        for path in ACTIONS:
            answer = await client.post(path, data={"csrf": "csrf-token"})
            assert answer.status_code == 401, path
            assert "Sign in" in answer.text


async def test_a_user_without_a_role_gets_a_clear_403_page(console: Console) -> None:
    async with console.client(NOBODY) as client:
        for path in PAGES:
            answer = await client.get(path)
            assert answer.status_code == 403, path
            assert "nora@contoso.example has no role in bcsync" in answer.text
            assert "Reader" in answer.text and "Operator" in answer.text
            assert 'href="/console/errors"' not in answer.text  # no navigation into the data
        assert (await client.post(ACTIONS[0], data={"csrf": "csrf-token"})).status_code == 403


async def test_a_reader_sees_every_page_without_actions_and_a_forged_post_is_refused(console: Console) -> None:
    async with console.client(READER) as client:
        for path in PAGES:
            answer = await client.get(path)
            assert answer.status_code in ((200, 502, 503) if path in ASKS_SYSTEMS else (200,)), path
            assert "<form" not in answer.text.replace('<form class="who" method="post" action="/console/logout">', "")\
                .replace('<form class="filters" method="get"', ""), f"{path} offers a form to a Reader"
        for path in ACTIONS:
            answer = await client.post(path, data={"csrf": "csrf-token", "mapping": "CUSTOMER", "bc_id": BC,
                                                   "dataverse_id": DV})
            assert answer.status_code == 403, path
            assert "Only an Operator may do this" in answer.text


async def test_an_operator_without_the_session_csrf_token_is_refused(console: Console) -> None:
    async with console.client(OPERATOR, csrf="the-real-token") as client:
        for token in (None, "a-forged-token"):
            answer = await client.post("/console/records/couplings/1/decouple",
                                       data={} if token is None else {"csrf": token})
            assert answer.status_code == 403
            assert "security token" in answer.text
        async with console.db.session() as session:
            assert await couplings.find(session, "CUSTOMER", "bc", BC) is not None  # still coupled


async def test_no_secret_reaches_the_html_and_pages_carry_strict_headers(console: Console) -> None:
    async with console.client(OPERATOR) as client:
        for path in PAGES:
            answer = await client.get(path)
            for secret in (CLIENT_SECRET, ADMIN_TOKEN, SESSION_SECRET):
                assert secret not in answer.text, path
            assert answer.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["x-content-type-options"] == "nosniff"


async def test_the_overview_charts_the_last_hour_from_the_history(console: Console) -> None:
    async with console.client(READER) as client:
        page = (await client.get("/console/")).text
    card = page[page.index('id="m-CUSTOMER"'):]
    card = card[:card.index("</section>")]
    assert "3 runs" in card
    assert "1.5 s / 4.0 s" in card  # p50 / p99 of the two writes' lags (the echo wrote nothing)
    assert len(re.findall(r"<rect ", card)) == 3  # one bar a minute with runs
    assert "<polyline" in card


async def test_search_finds_the_pair_and_its_page_shows_the_timeline(console: Console) -> None:
    async with console.client(READER) as client:
        found = (await client.get("/console/records", params={"q": "ADATUM"})).text
        assert f'href="/console/records/CUSTOMER/bc/{BC}"' in found
        assert "10000 Adatum Corporation" in found
        page = (await client.get(f"/console/records/CUSTOMER/dataverse/{DV}")).text
    assert page.index("conflict-lost") < page.index("echo") < page.index("applied")  # newest first
    assert "555-0100" in page and "555-0129" in page
    assert "b@adatum.example" not in page and "sensitive: values not kept" in page
    assert "request id <code>run-2</code>" in page
    assert "Decouple" not in page  # a Reader


async def test_an_operator_couples_and_decouples_and_is_told_what_happened(console: Console) -> None:
    async with console.client(OPERATOR) as client:
        page = (await client.get(f"/console/records/CUSTOMER/bc/{BC}")).text
        action = re.search(r'action="(/console/records/couplings/(\d+)/decouple)"', page)
        assert action is not None
        answer = await client.post(action.group(1), data={"csrf": "csrf-token"})
        assert answer.status_code == 303
        page = (await client.get(answer.headers["location"])).text
        assert "Decoupled CUSTOMER" in page and "not coupled" in page
        async with console.db.session() as session:
            assert await couplings.find(session, "CUSTOMER", "bc", BC) is None
        # Coupling by hand asks both systems whether the records exist: not configured here, so it says why.
        answer = await client.post("/console/records/couple", data={
            "csrf": "csrf-token", "mapping": "CUSTOMER", "bc_id": BC, "dataverse_id": "not-a-guid"})
        assert answer.status_code == 303
        page = (await client.get(answer.headers["location"])).text
        assert "Not coupled" in page and "dataverse_id" in page
