"""The console's error list and mapping pages through the real api (uvicorn, SQLite, RabbitMQ), signed in by a
session cookie (tests/console_session.py): what a Reader sees and may not do, an Operator's retry, dismiss,
hold, and a mapping change refused (not on hold; an invalid filter shown next to its input) and accepted (a new
version, with its diff)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from schemas.events import ChangeEvent
from service.store import mapping_configs, synclog
from service.store.db import Database
from service.store.migrate import upgrade_async
from service.store.models import SyncError
from service.topology import Topology
from tests.console_session import CONSOLE_SETTINGS, NOBODY, OPERATOR, READER, sign_in
from tests.harness import make_settings, running_api

BC_ID = "5f1e0000-0000-4000-8000-00000000000a"
DISMISS_ID = "6a2b0000-0000-4000-8000-00000000000b"
NO_EVENT_ID = "7c3d0000-0000-4000-8000-00000000000c"
SALESPERSON = "9e9e0000-0000-4000-8000-00000000000d"


def event(record_id: str) -> str:
    return ChangeEvent(source="business_central", entity="customers", record_id=record_id, change_type="updated",
                       occurred_at=datetime.now(UTC), dedupe_key=f"t:{record_id}", correlation_id="t").model_dump_json()


@dataclass
class Console:
    base: str
    client: httpx.AsyncClient
    app: FastAPI
    db: Database
    namespace: str
    errors: dict[str, int]  # record id → error id

    def sign_in(self, roles: tuple[str, ...]) -> str:
        self.client.cookies.clear()
        return sign_in(self.client, self.base, roles)

    async def error(self, error_id: int) -> SyncError:
        async with self.db.session() as session:
            row = await session.get(SyncError, error_id)
            assert row is not None
            return row


@pytest.fixture
async def console(tmp_path: Path, namespace: str, rabbit: aio_pika.abc.AbstractChannel) -> AsyncIterator[Console]:
    url = f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"
    await upgrade_async(url)
    db = Database(url)
    async with db.session() as session:
        # Failed twice the same way: skipped, until retried.
        for _ in range(2):
            skipped = await synclog.record_error(
                session, "CUSTOMER", "business_central", BC_ID, "the customer's salesperson has no Sales user",
                event=event(BC_ID), waiting_for=None)
        other = await synclog.record_error(session, "CUSTOMER", "business_central", DISMISS_ID,
                                           "waits for its salesperson", event=event(DISMISS_ID),
                                           waiting_for=f"SALESPEOPLE:bc:{SALESPERSON}")
        lost = await synclog.record_error(session, "CONTACT", "dataverse", NO_EVENT_ID, "found by the full sync")
        ids = {BC_ID: skipped.id, DISMISS_ID: other.id, NO_EVENT_ID: lost.id}
    assert skipped.state == "skipped"
    settings = make_settings(url, namespace, **CONSOLE_SETTINGS)
    async with running_api(settings) as (base, app), httpx.AsyncClient(base_url=base) as client:
        yield Console(base, client, app, db, namespace, {k: int(v or 0) for k, v in ids.items()})
    await db.close()


class Forms(HTMLParser):
    """What a browser would send from each form of a page (by its action): text, hidden, selected, checked."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, list[tuple[str, str]]] = {}
        self._form: list[tuple[str, str]] | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = self.forms.setdefault(a.get("action", ""), [])
        elif self._form is None:
            return
        elif tag == "input" and a.get("name"):
            if a.get("type") != "checkbox" or "checked" in a:
                self._form.append((a["name"], a.get("value", "on")))
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select and "selected" in a:
            self._form.append((self._select, a.get("value", "")))
        elif tag == "textarea":
            self._textarea = a.get("name")
            self._form.append((a.get("name", ""), ""))

    def handle_data(self, data: str) -> None:
        if self._textarea and self._form is not None:
            name, text = self._form.pop()
            self._form.append((name, text + data))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def form_of(html: str, action: str) -> dict[str, Any]:
    parser = Forms()
    parser.feed(html)
    assert action in parser.forms, (action, list(parser.forms))
    fields: dict[str, Any] = {}
    for name, text in parser.forms[action]:
        fields[name] = [*fields[name], text] if isinstance(fields.get(name), list) else (
            [fields[name], text] if name in fields else text)
    return fields


def notices(html: str) -> list[tuple[str, str]]:
    return [(kind, unescape(text)) for kind, text in
            re.findall(r'<p class="notice notice-(\w+)" role="\w+">(.*?)</p>', html, re.S)]


async def follow(console: Console, response: httpx.Response) -> httpx.Response:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    return await console.client.get(response.headers["location"])


# --- the error list ------------------------------------------------------------------------------------------

async def test_a_reader_sees_the_list_and_its_history_links_but_cannot_act(console: Console) -> None:
    csrf = console.sign_in(READER)
    page = await console.client.get("/console/errors")
    assert page.status_code == 200
    html = page.text
    for text in ("the customer&#39;s salesperson has no Sales user", "waits for its salesperson",
                 "found by the full sync"):
        assert text in html
    assert f'href="/console/records/CUSTOMER/bc/{BC_ID}"' in html  # the source business_central is side `bc`
    assert f'href="/console/records/CONTACT/dataverse/{NO_EVENT_ID}"' in html
    assert f'href="/console/records/SALESPEOPLE/bc/{SALESPERSON}"' in html  # what it waits for, one click away
    assert "/retry" not in html and "/dismiss" not in html and "Retry all" not in html
    error_id = console.errors[BC_ID]
    refused = await console.client.post(f"/console/errors/{error_id}/retry", data={"csrf": csrf})
    assert refused.status_code == 403 and "signed in as a Reader" in unescape(refused.text)
    assert (await console.client.post("/console/errors/retry-all", data={"csrf": csrf})).status_code == 403
    assert (await console.error(error_id)).state == "skipped"
    filtered = (await console.client.get("/console/errors", params={"mapping": "CONTACT"})).text
    assert "found by the full sync" in filtered and "waits for its salesperson" not in filtered
    by_text = (await console.client.get("/console/errors", params={"q": "SALESPERSON"})).text
    assert "waits for its salesperson" in by_text and "found by the full sync" not in by_text
    skipped = (await console.client.get("/console/errors", params={"state": "skipped"})).text
    assert BC_ID in skipped and DISMISS_ID not in skipped


async def test_without_a_session_a_role_or_the_csrf_token_nothing_is_done(console: Console) -> None:
    error_id = console.errors[BC_ID]
    anonymous = await console.client.get("/console/errors")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/console/login?next=")
    assert (await console.client.post(f"/console/errors/{error_id}/retry", data={"csrf": "x"})).status_code == 401
    csrf = console.sign_in(NOBODY)
    assert (await console.client.get("/console/errors")).status_code == 403
    assert (await console.client.post(f"/console/errors/{error_id}/retry", data={"csrf": csrf})).status_code == 403
    csrf = console.sign_in(OPERATOR)
    assert (await console.client.post(f"/console/errors/{error_id}/retry")).status_code == 403
    assert (await console.client.post(f"/console/errors/{error_id}/retry", data={"csrf": "forged"})).status_code == 403
    assert (await console.client.post("/console/mappings/CUSTOMER/hold", data={})).status_code == 403
    assert (await console.error(error_id)).state == "skipped"


async def test_an_operator_retries_an_error_and_sees_the_notice(console: Console,
                                                               rabbit: aio_pika.abc.AbstractChannel) -> None:
    csrf = console.sign_in(OPERATOR)
    error_id = console.errors[BC_ID]
    page = (await console.client.get("/console/errors", params={"mapping": "CUSTOMER"})).text
    assert f'action="/console/errors/{error_id}/retry"' in page
    assert 'data-confirm="Retry every error of CUSTOMER now?"' in page  # "Retry all" asks first
    form = form_of(page, f"/console/errors/{error_id}/retry")
    assert form["csrf"] == csrf and form["mapping"] == "CUSTOMER"
    done = await console.client.post(f"/console/errors/{error_id}/retry", data=form)
    assert done.headers["location"] == "/console/errors?mapping=CUSTOMER"  # the same filters
    after = await follow(console, done)
    assert ("ok", f"Retried error {error_id} (CUSTOMER, bc 5f1e0000…): the record is queued for "
                  "synchronization.") in notices(after.text)
    assert notices((await console.client.get("/console/errors")).text) == []  # shown once
    error = await console.error(error_id)
    assert (error.state, error.attempts) == ("open", 0)
    queue = await rabbit.declare_queue(Topology(console.namespace).mapping_queue("CUSTOMER"), passive=True)
    assert queue.declaration_result.message_count >= 1
    # An error without an event: the admin function's 409 comes back as a notice on the list, not an error page.
    lost = console.errors[NO_EVENT_ID]
    refused = await follow(console, await console.client.post(f"/console/errors/{lost}/retry", data={"csrf": csrf}))
    assert refused.status_code == 200
    assert notices(refused.text) == [("error", f"Error {lost} was not retried: this error has no event to retry; run "
                                               "a full synchronization of the mapping")]
    missing = await follow(console, await console.client.post("/console/errors/999999/retry", data={"csrf": csrf}))
    assert notices(missing.text) == [("error", "Error 999999 was not retried: no error 999999")]
    nope = await follow(console, await console.client.post("/console/errors/retry-all",
                                                           data={"csrf": csrf, "mapping": "NOPE"}))
    assert notices(nope.text) == [("error", "Retry all was not done: no mapping 'NOPE'")]
    everything = await follow(console, await console.client.post(
        "/console/errors/retry-all", data={"csrf": csrf, "mapping": "CUSTOMER", "state": "open"}))
    assert str(everything.url).endswith("/console/errors?mapping=CUSTOMER&state=open")
    assert ("ok", "Retried 2 errors of CUSTOMER: their records are queued for synchronization.") in notices(
        everything.text)


async def test_an_operator_dismisses_an_error(console: Console) -> None:
    csrf = console.sign_in(OPERATOR)
    error_id = console.errors[DISMISS_ID]
    done = await console.client.post(f"/console/errors/{error_id}/dismiss",
                                     data={"csrf": csrf, "state": "open", "q": "salesperson"})
    assert done.headers["location"] == "/console/errors?state=open&q=salesperson"
    page = await follow(console, done)
    assert notices(page.text) == [("ok", f"Dismissed error {error_id} (CUSTOMER, bc 6a2b0000…): the record is "
                                         "tried again on its next change.")]
    assert DISMISS_ID not in page.text  # the open list
    assert (await console.error(error_id)).state == "dismissed"
    dismissed = (await console.client.get("/console/errors", params={"state": "dismissed"})).text
    assert DISMISS_ID in dismissed and f'action="/console/errors/{error_id}/dismiss"' not in dismissed


async def test_the_list_pages_by_100(console: Console) -> None:
    async with console.db.session() as session:
        for n in range(150):
            await synclog.record_error(session, "ITEM-PRODUCT", "business_central", f"item-{n:03}", f"broken {n}")
    console.sign_in(READER)
    first = (await console.client.get("/console/errors", params={"mapping": "ITEM-PRODUCT"})).text
    assert "item-000" in first and "item-099" in first and "item-100" not in first
    found = re.search(r'<a href="([^"]+)">Next 100</a>', first)
    assert found
    second = (await console.client.get(unescape(found[1]))).text
    assert parse_qs(urlsplit(unescape(found[1])).query)["mapping"] == ["ITEM-PRODUCT"]
    assert "item-100" in second and "item-149" in second and "item-099" not in second and "Next 100" not in second
    searched = (await console.client.get("/console/errors", params={"mapping": "ITEM-PRODUCT", "q": "broken 14"}))
    assert [n for n in range(150) if f">item-{n:03}<" in searched.text] == [14, *range(140, 150)]


# --- the mappings --------------------------------------------------------------------------------------------

async def test_mappings_list_hold_and_resume(console: Console) -> None:
    console.sign_in(READER)
    page = (await console.client.get("/console/mappings")).text
    assert '<a href="/console/mappings/CUSTOMER">CUSTOMER</a>' in page and "SALESORDER-ORDER" in page
    assert "/hold" not in page and "Hold all" not in page
    csrf = console.sign_in(OPERATOR)
    page = (await console.client.get("/console/mappings")).text
    assert 'action="/console/mappings/all/hold"' in page and 'action="/console/mappings/CUSTOMER/hold"' in page
    held = await follow(console, await console.client.post("/console/mappings/CUSTOMER/hold",
                                                           data={"csrf": csrf, "next": "/console/mappings"}))
    assert ("ok", "CUSTOMER is on hold: events wait in the queue until resumed.") in notices(held.text)
    assert 'action="/console/mappings/CUSTOMER/resume"' in held.text
    async with console.db.session() as session:
        assert await mapping_configs.is_held(session, "CUSTOMER")
    everything = await follow(console, await console.client.post("/console/mappings/all/resume",
                                                                 data={"csrf": csrf, "next": "//evil.example/"}))
    assert str(everything.url).endswith("/console/")  # no redirect off the console
    assert ("ok", "All 11 mappings resumed: waiting events are applied in order.") in notices(everything.text)
    unknown = await follow(console, await console.client.post("/console/mappings/NOPE/hold",
                                                              data={"csrf": csrf, "next": "/console/mappings"}))
    assert notices(unknown.text)[0][1].startswith("NOPE was not put on hold: no mapping 'NOPE'")


async def test_changing_a_mapping_refused_then_accepted_with_its_diff(console: Console) -> None:
    csrf = console.sign_in(OPERATOR)
    page = (await console.client.get("/console/mappings/CUSTOMER")).text
    assert "statecode eq 0 and customertypecode eq 3" in page and "displayName" in page
    assert 'action="/console/mappings/CUSTOMER"' not in page  # no change form while it runs
    assert "put it on hold to change it" in page
    # The form of a held mapping, sent after someone resumed it: the API's 409 at the top, the entered value kept.
    await console.client.post("/console/mappings/CUSTOMER/hold", data={"csrf": csrf, "next": "/console/mappings"})
    form = form_of((await console.client.get("/console/mappings/CUSTOMER")).text, "/console/mappings/CUSTOMER")
    await console.client.post("/console/mappings/CUSTOMER/resume", data={"csrf": csrf, "next": "/console/mappings"})
    refused = await console.client.post("/console/mappings/CUSTOMER", data={**form, "bc_filter": "displayName ne 'x'"})
    assert refused.status_code == 409
    assert re.search(r'role="alert">\s*<p class="mapping-problem-title">The change was not saved.</p>\s*'
                     r"<p>CUSTOMER is not on hold: put it on hold", refused.text)
    assert 'value="displayName ne &#39;x&#39;"' in refused.text  # the form is there again, with what was typed
    await console.client.post("/console/mappings/CUSTOMER/hold", data={"csrf": csrf, "next": "/console/mappings"})
    page = (await console.client.get("/console/mappings/CUSTOMER")).text
    form = form_of(page, "/console/mappings/CUSTOMER")
    assert form["csrf"] == csrf and form["version"] == "1" and form["bc_filter"] == "blocked eq ' '"
    unchanged = await follow(console, await console.client.post("/console/mappings/CUSTOMER", data=form))
    assert notices(unchanged.text) == [("ok", "Nothing to change: CUSTOMER is as the form was.")]
    # An invalid filter: 400, the message next to the filter, what was typed still there, nothing stored.
    bad = {**form, "bc_filter": "blocked eq", "reconcile_minutes": "45", "depends_on": ["CONTACT"]}
    refused = await console.client.post("/console/mappings/CUSTOMER", data=bad)
    assert refused.status_code == 400
    # Both of the API's problems ("; "-joined), each where it belongs: the cycle under the dependencies.
    assert re.search(r'<div id="err-depends_on"><p class="field-error">dependency cycle: [^<]*CONTACT[^<]*</p></div>\s*'
                     r"</fieldset>", refused.text)
    assert re.search(r'id="c-dep-CONTACT" name="depends_on" type="checkbox" value="CONTACT" checked>', refused.text)
    assert not re.search(r'id="c-dep-CURRENCY"[^>]*checked', refused.text)
    assert re.search(r'<input id="c-bc_filter" name="bc_filter"[^>]*value="blocked eq" aria-invalid="true" '
                     r'aria-describedby="err-bc_filter">\s*<div id="err-bc_filter"><p class="field-error">'
                     r"bc_filter: incomplete comparison</p></div>", refused.text), refused.text
    assert re.search(r'id="c-reconcile_minutes"[^>]*value="45"', refused.text)
    assert "The problems are shown next to the settings they concern." in refused.text
    # A value out of range is caught before the API: next to its input as well.
    out_of_range = await console.client.post("/console/mappings/CUSTOMER", data={**form, "reconcile_minutes": "-5"})
    assert out_of_range.status_code == 400
    assert re.search(r'<div id="err-reconcile_minutes"><p class="field-error">Input should be greater than or '
                     r"equal to 0</p>", out_of_range.text)
    async with console.db.session() as session:
        assert (await mapping_configs.get(session, "CUSTOMER")).version == 1
    # A valid change: a filter, a field marked sensitive, a dependency dropped.
    good = {**form, "bc_filter": "displayName ne 'x'", "field-1-sensitive": "on", "depends_on": ["SALESPEOPLE"]}
    done = await console.client.post("/console/mappings/CUSTOMER", data=good)
    assert done.headers["location"] == "/console/mappings/CUSTOMER?diff=2#versions"
    page = await follow(console, done)
    assert notices(page.text)[0][1].startswith("CUSTOMER changed (bc_filter, depends_on, fields): now version 2.")
    assert "Version 2 against version 1" in page.text
    diff = page.text.split('<section class="mapping-diff"', 1)[1].split("</section>", 1)[0]
    rows = [tuple(unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S))
            for row in re.findall(r"<tr>(.*?)</tr>", diff.split("<tbody>", 1)[1], re.S)]
    assert rows == [("bc_filter", "added", "—", '"displayName ne \'x\'"'),
                    ("depends_on", "added", "—", '["SALESPEOPLE"]'),
                    ("fields[number ⇄ accountnumber].sensitive", "added", "—", "true")]
    assert 'class="diff-add"' in diff
    # The next change: a diff against version 2 shows what changed and what went.
    form = form_of(page.text, "/console/mappings/CUSTOMER")
    assert form["version"] == "2" and form["field-1-sensitive"] == "on"
    del form["field-1-sensitive"]
    done = await console.client.post("/console/mappings/CUSTOMER", data={**form, "bc_filter": "blocked eq ' '"})
    page = await follow(console, done)
    diff = page.text.split('<section class="mapping-diff"', 1)[1].split("</section>", 1)[0]
    assert "Version 3 against version 2" in diff and 'class="diff-del"' in diff
    assert "fields[number ⇄ accountnumber].sensitive" in diff
    old = (await console.client.get("/console/mappings/CUSTOMER", params={"diff": 2})).text
    assert "Version 2 against version 1" in old
    assert "has no stored version 7" in (await console.client.get("/console/mappings/CUSTOMER?diff=7")).text
    # A form of an older version is not applied over a newer one.
    stale = await console.client.post("/console/mappings/CUSTOMER", data={**form, "version": "2",
                                                                           "conflict_policy": "send"})
    assert stale.status_code == 409 and "CUSTOMER was changed meanwhile (now version 3)" in stale.text
