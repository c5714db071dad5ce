"""The console's jobs pages against the real api (in-process under uvicorn, real RabbitMQ, a SQLite store) with the
sandbox behind it: the full synchronization review, start, live progress (the worker's FullSync job runs in this
process, on the same store) and restart; the subscriptions after setup and "Refresh now"; the setup check, its
problems and a friendly page when the systems do not answer. A Reader sees no action and is refused one.

Signed in by the session cookie tests/console_session.py builds (the Entra sign-in itself is the browser tests'
and the sign-in tests' subject)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from consumers.jobs.fullsync import FullSync
from consumers.jobs.settings import JobSettings
from consumers.rules.context import SyncContext
from consumers.sync import SyncEngine
from service.api import admin_jobs
from service.connectors.factory import make_clients
from service.settings import Settings
from service.store import jobs
from service.store.db import Database
from service.store.migrate import upgrade_async
from tests.console_session import OPERATOR, READER, SESSION_SECRET, sign_in
from tests.harness import ADMIN_TOKEN, free_port, make_settings, running_api, wait_for
from tests.integration.sync_world import Human
from tests.sandbox_thread import start_sandbox_thread

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ITEMS = 30
review_original = admin_jobs.review


class Browser:
    """One signed-in person: keeps the session cookie the console sends back (its notices ride in it)."""

    def __init__(self, base: str, roles: tuple[str, ...]) -> None:
        self.client = httpx.AsyncClient(base_url=base, timeout=60)
        self.csrf = sign_in(self.client, base, roles)

    async def get(self, path: str, expect: int = 200) -> str:
        response = await self.client.get(path)
        assert response.status_code == expect, (path, response.status_code, response.text[:2000])
        return response.text

    async def post(self, path: str, data: dict[str, Any] | None = None, expect: int = 303,
                   csrf: bool = True) -> httpx.Response:
        form = {**({"csrf": self.csrf} if csrf else {}), **(data or {})}
        response = await self.client.post(path, data=form)
        assert response.status_code == expect, (path, response.status_code, response.text[:2000])
        return response

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class Stack:
    base: str
    app: FastAPI
    db: Database
    engine: SyncEngine
    human: Human
    reader: Browser
    operator: Browser
    admin: httpx.AsyncClient
    stop_sandbox: Any


@contextlib.asynccontextmanager
async def console_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str,
                        **readings: Any) -> AsyncIterator[Stack]:
    config, stop = start_sandbox_thread(tmp_path, **readings)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", config.ca_file)
    url = f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"
    await upgrade_async(url)
    port = free_port()
    connection = {"tenant_id": config.tenant_id, "client_id": config.client_id, "client_secret": config.client_secret,
                  "authority_host": f"https://127.0.0.1:{config.entra_port}",
                  "bc_url": f"http://127.0.0.1:{config.bc_port}/v2.0/{{tenant}}/production",
                  "bc_company_id": config.company_id, "dataverse_url": f"http://127.0.0.1:{config.dataverse_port}"}
    # public_url: the api itself, so BC's subscription handshake reaches its webhook door
    settings = make_settings(url, namespace, port=port, public_url=f"http://127.0.0.1:{port}",
                             console_session_secret=SESSION_SECRET, **connection)
    db = Database(url)
    bc, dv = make_clients(Settings(_env_file=None, **connection), "bcsync-console-jobs-tag")
    engine = SyncEngine(SyncContext(bc=bc, dv=dv, db=db, local_currency="USD"))
    human = Human(config)
    stopped = False

    def stop_sandbox() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            stop()

    try:
        async with running_api(settings) as (base, app), httpx.AsyncClient(base_url=base, timeout=60,
                                                                           headers=AUTH) as admin:
            reader, operator = Browser(base, READER), Browser(base, OPERATOR)
            try:
                yield Stack(base, app, db, engine, human, reader, operator, admin, stop_sandbox)
            finally:
                await reader.aclose()
                await operator.aclose()
    finally:
        await human.aclose()
        await bc.aclose()
        await dv.aclose()
        await db.close()
        stop_sandbox()


def row(html: str, table_id: str, first_cell: str) -> str:
    """The <tr> of a table whose row header (or data-mapping) names `first_cell`."""
    table = re.search(rf'<table id="{re.escape(table_id)}".*?</table>', html, re.S)
    assert table, f"no table {table_id}"
    for tr in re.findall(r"<tr\b.*?</tr>", table.group(0), re.S):
        if re.search(rf'<th scope="row">(<[^>]+>)*\s*{re.escape(first_cell)}\s*<', tr) \
                or f'data-mapping="{first_cell}"' in tr:
            return tr
    raise AssertionError(f"no row {first_cell} in {table_id}: {table.group(0)[:3000]}")


def live_section(html: str) -> str:
    found = re.search(r'<section id="run-lines".*?</section>', html, re.S)
    assert found, html[:3000]
    return found.group(0)


def notices(html: str) -> list[str]:
    return [re.sub(r"\s+", " ", n) for n in re.findall(r'<p class="notice notice-\w+"[^>]*>(.*?)</p>', html, re.S)]


async def line_of(db: Database, mapping: str) -> Any:
    async with db.session() as session:
        run = await jobs.latest_run(session)
        assert run is not None and run.id is not None
        return next(x for x in await jobs.run_lines(session, run.id) if x.mapping == mapping)


async def no_kick(_: str) -> None:
    return None


# ---- full synchronization ---------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_full_sync_review_start_live_progress_and_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                namespace: str, rabbit: Any) -> None:
    async with console_stack(tmp_path, monkeypatch, namespace) as stack:
        assert (await stack.human.bc.post("/seed", json={"customers": 0, "items": ITEMS, "salespeople": 0})
                ).status_code == 200

        # A Reader: the review with counts and recommendations, nothing to press.
        page = await stack.reader.get("/console/full-sync")
        item = row(page, "review", "ITEM-PRODUCT")
        assert re.search(rf'<td class="num">{ITEMS}</td>\s*<td class="num">0</td>\s*<td class="num">0</td>', item), item
        assert "Full Synch." in item
        assert "Start full synchronization" not in page and 'name="mappings"' not in page
        assert "No full synchronization has run yet" in page and 'data-live="false"' in live_section(page)
        # ... and a forged POST (with the Reader's own CSRF token) is refused; nothing starts.
        refused = await stack.reader.post("/console/full-sync", {"mappings": "ITEM-PRODUCT"}, expect=403)
        assert "Only an Operator may do this" in refused.text
        assert (await stack.admin.get("/admin/full-sync?review_lines=false")).json()["run"] is None

        # An Operator: the recommended mappings are checked; without a CSRF token nothing happens.
        page = await stack.operator.get("/console/full-sync")
        assert re.search(r'id="pick-ITEM-PRODUCT" name="mappings" value="ITEM-PRODUCT" checked', page)
        assert '<label class="jobs-inline" for="pick-ITEM-PRODUCT">' in page
        await stack.operator.post("/console/full-sync", {"mappings": "ITEM-PRODUCT"}, expect=403, csrf=False)
        await stack.operator.post("/console/full-sync")  # nothing checked
        assert "Not started: choose at least one mapping." in notices(await stack.operator.get("/console/full-sync"))
        started = await stack.operator.post("/console/full-sync", {"mappings": "ITEM-PRODUCT"})
        assert started.headers["location"] == "/console/full-sync"
        page = await stack.operator.get("/console/full-sync")
        assert any("started: ITEM-PRODUCT" in n for n in notices(page)), notices(page)
        section = live_section(page)
        assert 'data-live="true"' in section and 'data-refresh="/console/full-sync?fragment=lines"' in section
        assert "Ready" in row(section, "lines", "ITEM-PRODUCT")

        # A second start while it runs: refused, said on the page.
        await stack.operator.post("/console/full-sync", {"mappings": "ITEM-PRODUCT"})
        assert any("Not started" in n and "in progress" in n for n in notices(await stack.operator.get(
            "/console/full-sync"))), "second start not refused"

        # The worker's job runs the line; it pauses after its first batch so the progress can be seen.
        rule = stack.engine.rules["ITEM-PRODUCT"]
        original = rule.records
        gate = asyncio.Event()

        async def records(side: str, filter_: str | None = None) -> Any:
            source = await original(side, filter_)

            async def paced() -> Any:
                n = 0
                async for record in source:
                    if n == 10:
                        await gate.wait()
                    n += 1
                    yield record
            return paced()

        monkeypatch.setattr(rule, "records", records)
        runner = FullSync(stack.db, stack.engine, JobSettings(_env_file=None, full_sync_batch=10,
                                                              jobs_poll_seconds=0.2), no_kick)
        try:
            await runner.tick()

            async def first_batch_done() -> bool:
                line = await line_of(stack.db, "ITEM-PRODUCT")
                return sum(getattr(line, c) for c in jobs.COUNTERS) >= 10

            await wait_for(first_batch_done, timeout=60)

            # The live refresh: only the lines (no review: it must not ask BC or Dataverse), with the progress.
            async def no_review(*_: Any, **__: Any) -> Any:
                raise AssertionError("the live refresh read the review counts")

            monkeypatch.setattr(admin_jobs, "review", no_review)
            began = time.monotonic()
            fragment = await stack.operator.get("/console/full-sync?fragment=lines")
            assert time.monotonic() - began < 2.0
            assert "<html" not in fragment and 'id="review"' not in fragment
            assert fragment.count('id="run-lines"') == 1 and 'data-live="true"' in fragment
            line = row(fragment, "lines", "ITEM-PRODUCT")
            assert "In Progress" in line, line
            assert re.search(rf'<progress value="10" max="{ITEMS}"', line), line
            assert f"10 of {ITEMS}" in line and "10 inserted" in line
            assert "Restart ITEM-PRODUCT" in line and 'data-confirm="ITEM-PRODUCT is running in a worker' in line
            reader_view = await stack.reader.get("/console/full-sync?fragment=lines")
            assert "In Progress" in row(reader_view, "lines", "ITEM-PRODUCT") and "Restart" not in reader_view
            monkeypatch.setattr(admin_jobs, "review", review_original)

            # A Reader may not restart; the Operator restarts the running line: Ready again, zero counts.
            await stack.reader.post("/console/full-sync/lines/ITEM-PRODUCT/restart", expect=403)
            await stack.operator.post("/console/full-sync/lines/ITEM-PRODUCT/restart")
            page = await stack.operator.get("/console/full-sync")
            assert any("Line ITEM-PRODUCT restarted" in n for n in notices(page)), notices(page)
            line = row(live_section(page), "lines", "ITEM-PRODUCT")
            assert "Ready" in line and "Restart" not in line
            restarted = await line_of(stack.db, "ITEM-PRODUCT")
            assert restarted.status == jobs.READY and restarted.inserted == 0  # the running attempt has lost it

            # The old attempt notices and stops; the line runs again, to the end.
            monkeypatch.setattr(rule, "records", original)
            gate.set()
            await wait_for(lambda: not runner.running, timeout=60)
            await runner.tick()
            await wait_for(lambda: not runner.running, timeout=120)
            fragment = await stack.operator.get("/console/full-sync?fragment=lines")
            assert 'data-live="false"' in fragment, fragment[:500]
            line = row(fragment, "lines", "ITEM-PRODUCT")
            # (the first attempt wrote a batch or two before it noticed: those records are unchanged now)
            assert "Finished" in line and f"{ITEMS} of {ITEMS}" in line and "inserted" in line, line
            assert re.search(rf'<progress value="{ITEMS}" max="{ITEMS}"', line), line
            assert "Restart" not in line

        finally:
            await runner.stop()

        # Restarting a finished line: refused, with the admin API's reason.
        await stack.operator.post("/console/full-sync/lines/ITEM-PRODUCT/restart")
        page = await stack.operator.get("/console/full-sync")
        assert any("Not restarted" in n and "only a line in Error or In Progress" in n for n in notices(page))
        # The review now counts the couplings, and the finished run is shown without live refresh.
        assert re.search(rf'<td class="num">{ITEMS}</td>\s*<td class="num">{ITEMS}</td>\s*<td class="num">{ITEMS}</td>',
                         row(page, "review", "ITEM-PRODUCT"))
        assert 'data-live="false"' in live_section(page)


# ---- subscriptions and setup check ------------------------------------------------------------------------------


async def test_subscriptions_after_setup_refresh_and_the_setup_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     namespace: str, rabbit: Any) -> None:
    async with console_stack(tmp_path, monkeypatch, namespace) as stack:
        # The setup check before setup: everything fits the sandbox.
        page = await stack.reader.get("/console/setup-check")
        assert 'id="all-good"' in page and "All good" in page, notices(page)
        assert "fits" in row(page, "check", "CUSTOMER") and "polled" in row(page, "check", "CONTACT")
        assert "installed" in page

        assert (await stack.admin.post("/admin/setup")).status_code == 200
        page = await stack.reader.get("/console/subscriptions")
        assert "No subscription recorded yet" in page and "Refresh now" not in page
        await stack.reader.post("/console/subscriptions/refresh", expect=403)

        # The keeper's pass, now: the subscriptions setup made are listed with their expiry.
        page = await stack.operator.get("/console/subscriptions")
        assert "Refresh now" in page
        await stack.operator.post("/console/subscriptions/refresh")
        page = await stack.operator.get("/console/subscriptions")
        assert any(n.startswith("Refreshed: Business Central:") for n in notices(page)), notices(page)
        states = (await stack.admin.get("/admin/subscriptions")).json()
        assert states["bc"] and states["dataverse"]
        for sub in states["bc"]:
            tr = row(page, "bc-subscriptions", sub["resource"])
            assert sub["id"] in tr and sub["status"] in tr and "jobs-" not in tr  # 3 days ahead: no highlight
        dataverse = row(page, "dataverse-registration", states["dataverse"][0]["resource"])
        assert states["dataverse"][0]["id"] in dataverse

        # One about to expire, one expired: highlighted, in words too.
        soon, gone = states["bc"][0], states["bc"][1]
        async with stack.db.session() as session:
            await jobs.save_subscription_state(session, f"bc:{soon['resource']}", system="bc",
                                               resource=soon["resource"],
                                               expires_at=datetime.now(UTC) + timedelta(hours=3))
            await jobs.save_subscription_state(session, f"bc:{gone['resource']}", system="bc",
                                               resource=gone["resource"],
                                               expires_at=datetime.now(UTC) - timedelta(minutes=5))
        page = await stack.reader.get("/console/subscriptions")
        assert 'class="jobs-soon"' in row(page, "bc-subscriptions", soon["resource"])
        assert "expires within a day" in row(page, "bc-subscriptions", soon["resource"])
        assert 'class="jobs-expired"' in row(page, "bc-subscriptions", gone["resource"])
        assert "2 registrations expired or expire" in page

        # Refresh renews them.
        await stack.operator.post("/console/subscriptions/refresh")
        page = await stack.operator.get("/console/subscriptions")
        assert any("Refreshed" in n for n in notices(page)) and "jobs-expired" not in page and "jobs-soon" not in page


async def test_setup_check_problems_and_unreachable_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            namespace: str, rabbit: Any) -> None:
    async with console_stack(tmp_path, monkeypatch, namespace, missing_fields=("customers.website",)) as stack:
        page = await stack.reader.get("/console/setup-check")
        assert 'id="all-good"' not in page and "1 mapping" in page and "cannot run here" in page
        customer = row(page, "check", "CUSTOMER")
        assert "unavailable" in customer and "customers has no field website (mapped to websiteurl)" in customer
        assert "depends on CUSTOMER" in row(page, "check", "CONTACT")
        assert re.search(r'<ul id="unavailable"><li><strong>CUSTOMER</strong>', page)

        # Both systems gone: the last minute's check is shown again without asking them ...
        stack.stop_sandbox()
        page = await stack.reader.get("/console/setup-check")
        assert "cannot run here" in page and re.search(r"Checked (\d+ s ago|just now)", page)
        # ... and asking again gives a page that says so, not a traceback.
        response = await stack.reader.client.get("/console/setup-check?recheck=true")
        # (the admin function answers 400: its connection check turns "no answer" into a refusal that says why)
        assert response.status_code in (400, 502, 503), response.status_code
        assert "Business Central" in response.text and "no answer" in response.text
        assert "The check could not run" in response.text and "Traceback" not in response.text
        assert response.headers["content-type"].startswith("text/html")
