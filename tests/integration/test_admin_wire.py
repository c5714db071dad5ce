"""The admin API's JSON as the console and the CLI read it, pinned route by route on SQLite and PostgreSQL:
the field names of every answer, the form of its timestamps, and what the job routes answer to every shape
of body (none, empty, `null`, not JSON, unknown keys, wrong types). The api runs in-process with the sandbox
behind it and the real RabbitMQ.

`BCSYNC_WIRE_DUMP=<dir>` also writes every answer (timestamps and ids reduced to their form) to a file per
database, for comparing two versions of the api by hand."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.events import ChangeEvent
from service import setup as assisted_setup
from service.store import couplings, jobs, locks, synclog
from service.store.db import Database
from service.store.migrate import upgrade_async
from service.store.models import SyncError, SyncJob
from tests.harness import ADMIN_TOKEN, make_settings, running_api
from tests.integration.sync_world import Human
from tests.sandbox_thread import start_sandbox_thread

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


class Api:
    def __init__(self, url: str, client: httpx.AsyncClient, db: Database, human: Human) -> None:
        self.url, self.client, self.db, self.human = url, client, db, human
        self.seen: list[tuple[str, int, Any]] = []

    async def call(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> Any:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        response = await self.client.request(method, f"{self.url}{path}", headers=headers, **kwargs)
        body = response.json() if response.content else None
        self.seen.append((f"{method} {path} {kwargs.get('content', kwargs.get('json', ''))!s:.60}",
                          response.status_code, body))
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.text)
        return body


@pytest.fixture
async def api(tmp_path: Path, namespace: str, database_url: str, monkeypatch: pytest.MonkeyPatch,
              rabbit: Any) -> AsyncIterator[Api]:
    config, stop = start_sandbox_thread(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", config.ca_file)
    await upgrade_async(database_url)
    settings = make_settings(
        database_url, namespace, tenant_id=config.tenant_id, client_id=config.client_id,
        client_secret=config.client_secret, authority_host=f"https://127.0.0.1:{config.entra_port}",
        bc_url=f"http://127.0.0.1:{config.bc_port}/v2.0/{{tenant}}/production", bc_company_id=config.company_id,
        dataverse_url=f"http://127.0.0.1:{config.dataverse_port}", public_url="https://bcsync.example")
    db = Database(database_url)
    human = Human(config)
    try:
        async with running_api(settings) as (base, _), httpx.AsyncClient(timeout=60) as client:
            yield Api(base, client, db, human)
    finally:
        await human.aclose()
        await db.close()
        stop()


def keys(value: Any) -> list[str]:
    assert isinstance(value, dict), value
    return sorted(value)


def timestamps(value: Any, found: list[str] | None = None) -> list[str]:
    """Every string in `value` that looks like a timestamp."""
    found = [] if found is None else found
    if isinstance(value, dict):
        for item in value.values():
            timestamps(item, found)
    elif isinstance(value, list):
        for item in value:
            timestamps(item, found)
    elif isinstance(value, str) and DATETIME.match(value):
        found.append(value)
    return found


def suffix(stamp: str) -> str:
    return "Z" if stamp.endswith("Z") else stamp[-6:] if re.search(r"[+-]\d\d:\d\d$", stamp) else ""


COUPLING_KEYS = sorted(["id", "mapping", "bc_id", "dataverse_id", "bc_modified", "dataverse_modified", "bc_hash",
                        "dataverse_hash", "last_result", "attempts", "info", "written", "created_at", "updated_at"])
ERROR_KEYS = sorted(["id", "mapping", "source", "source_id", "destination_id", "message", "attempts", "state",
                     "waiting_for", "first_seen", "last_seen", "retryable"])
JOB_KEYS = sorted(["id", "mapping", "direction", "kind", "bucket", "started_at", "finished_at", "inserted", "modified",
                   "deleted", "unchanged", "skipped", "failed", "coupled"])
MAPPING_KEYS = sorted(["name", "bc_entity", "dataverse_entity", "bc_api", "direction", "supported_directions",
                       "depends_on", "bc_filter", "dataverse_filter", "only_coupled", "conflict_policy",
                       "delete_policy", "bc_template", "dataverse_template", "match_keys", "reconcile_minutes",
                       "fields", "on_hold", "version"])
LINE_KEYS = sorted(["mapping", "position", "depends_on", "recommendation", "status", "state", "stuck", "attempt",
                    "worker", "started_at", "finished_at", "updated_at", "message", "counts"])
RUN_KEYS = ["created_at", "finished_at", "id", "lines", "status", "waiting_for_error"]
REVIEW_KEYS = sorted(["mapping", "direction", "depends_on", "couplings", "bc_records", "dataverse_records",
                      "recommendation"])
CATCH_UP_KEYS = sorted(["mapping", "bc_watermark", "dataverse_watermark", "last_run_at", "next_run_at", "requested_at",
                        "runs", "last_found", "last_error", "minutes", "on_hold"])
SUBSCRIPTION_KEYS = sorted(["system", "resource", "id", "expires_at", "status", "last_check", "last_change", "error"])


async def seed_log(db: Database) -> None:
    event = ChangeEvent(source="business_central", entity="customers", record_id="5f1e0000-0000-4000-8000-00000000000a",
                        change_type="updated", occurred_at=T0, dedupe_key="wire-1", correlation_id="wire")
    async with db.session() as session:
        session.add(SyncJob(mapping="CUSTOMER", direction="to_crm", kind="live", bucket="2026-12-01T09",
                            started_at=T0, finished_at=T0 + timedelta(seconds=3), inserted=2, modified=1))
        session.add(SyncJob(mapping="CURRENCY", direction="to_crm", kind="full", bucket="run-1",
                            started_at=T0, finished_at=None, failed=1))
        session.add(SyncError(mapping="CUSTOMER", source="business_central", source_id="a1", message="boom",
                              event=event.model_dump_json(), first_seen=T0, last_seen=T0 + timedelta(minutes=1)))
        session.add(SyncError(mapping="CUSTOMER", source="dataverse", source_id="b2", message="no event",
                              state="skipped", attempts=2, first_seen=T0, last_seen=T0))
        await synclog.record_error(session, "CONTACT", "dataverse", "c3", "waiting", waiting_for="CUSTOMER:bc:x")


async def test_every_admin_answer_keeps_its_fields_and_timestamp_form(api: Api, database_url: str) -> None:
    await seed_log(api.db)
    status = await api.call("GET", "/admin/status", 200)
    assert keys(status) == ["broker_connected", "mappings", "outbox_pending"]
    assert keys(status["mappings"][0]) == sorted(["name", "direction", "depends_on", "on_hold", "available",
                                                  "unavailable_reason", "bc_delivery", "queue_depth", "last_success",
                                                  "lag_seconds", "open_errors"])
    check = await api.call("GET", "/admin/setup/check", 200)
    assert keys(check) == sorted(["business_central", "integration_user", "ok", "unavailable", "mappings",
                                  "warnings", "bc_routes", "webhook_resources"])
    assert keys(check["mappings"][0]) == ["available", "bc_delivery", "mapping", "problems", "warnings"]
    setup = await api.call("POST", "/admin/setup", 200)
    assert keys(setup) == sorted(["business_central", "integration_user", "mappings_seeded", "check", "bc_subscriptions",
                                  "dataverse_webhook", "changed", "mappings"])
    assert keys(setup["bc_subscriptions"]) == sorted(["created", "kept", "renewed", "removed", "failed", "refused"])
    assert keys(setup["mappings"]["CUSTOMER"]) == ["available", "bc_delivery", "reason"]

    listed = await api.call("GET", "/admin/mappings", 200)
    assert [keys(m) for m in listed] == [MAPPING_KEYS] * len(listed)
    assert keys(listed[0]["fields"][0]) == sorted(["bc", "dataverse", "enabled", "direction", "transform",
                                                   "create_only", "sensitive"])
    await api.call("PATCH", "/admin/mappings/CUSTOMER", 409, json={"reconcile_minutes": 30})
    held = await api.call("POST", "/admin/mappings/CUSTOMER/hold", 200)
    assert held == {"mappings": ["CUSTOMER"], "on_hold": True, "runs_in_flight": 0}
    changed = await api.call("PATCH", "/admin/mappings/CUSTOMER", 200, json={"reconcile_minutes": 30})
    assert keys(changed) == MAPPING_KEYS and changed["version"] == 2
    shown = await api.call("GET", "/admin/mappings/CUSTOMER", 200)
    assert keys(shown) == sorted([*MAPPING_KEYS, "history"])
    assert keys(shown["history"][0]) == ["changed_at", "config", "version"]
    assert isinstance(shown["history"][0]["config"], str)
    await api.call("POST", "/admin/mappings/CUSTOMER/resume", 200)
    both = await api.call("POST", "/admin/mappings/all/hold", 200)
    assert len(both["mappings"]) > 2
    await api.call("POST", "/admin/mappings/all/resume", 200)

    await api.human.bc_create("customers", {"displayName": "Wire Works BC"})
    await api.human.dv_create("accounts", {"name": "Wire Works Sales", "customertypecode": 3})
    matched = await api.call("POST", "/admin/couplings/match", 200, json={"mapping": "CUSTOMER"})
    assert keys(matched) == sorted(["mapping", "coupled", "already_coupled", "ambiguous", "unmatched_bc",
                                    "unmatched_dataverse", "ambiguous_bc_ids", "unmatched_bc_ids",
                                    "unmatched_dataverse_ids"])
    created = await api.call("POST", "/admin/couplings/match", 200, json={"mapping": "CUSTOMER",
                                                                          "create_missing": True})
    assert created["queued_for_creation"] >= 1, created
    pair = {"mapping": "CUSTOMER", "bc_id": matched["unmatched_bc_ids"][0],
            "dataverse_id": matched["unmatched_dataverse_ids"][0]}
    by_hand = await api.call("POST", "/admin/couplings", 201, json={**pair, "sync_from": "bc"})
    assert keys(by_hand) == COUPLING_KEYS and by_hand["last_result"] == "coupled by hand"
    await api.call("POST", "/admin/couplings", 409, json=pair)
    async with api.db.session() as session:
        await couplings.save(session, "CUSTOMER", "c0000000-0000-4000-8000-000000000001",
                             "d0000000-0000-4000-8000-000000000002", bc_modified=T0, bc_hash="h", info='{"a": 1}')
    couples = await api.call("GET", "/admin/couplings?mapping=CUSTOMER", 200)
    assert len(couples) == 2 and [keys(c) for c in couples] == [COUPLING_KEYS] * 2
    await api.call("DELETE", f"/admin/couplings/{couples[1]['id']}", 204)
    await api.call("DELETE", f"/admin/couplings/{couples[1]['id']}", 404)

    log = await api.call("GET", "/admin/sync-log", 200)
    assert [keys(j) for j in log] == [JOB_KEYS] * len(log) and len(log) >= 2
    errors = await api.call("GET", "/admin/errors", 200)
    assert [keys(e) for e in errors] == [ERROR_KEYS] * 3
    retryable = next(e for e in errors if e["retryable"])
    retried = await api.call("POST", f"/admin/errors/{retryable['id']}/retry", 200)
    assert keys(retried) == ERROR_KEYS and retried["state"] == "open" and retried["attempts"] == 0
    stuck = next(e for e in errors if not e["retryable"])
    assert (await api.call("POST", f"/admin/errors/{stuck['id']}/retry", 409))["detail"]
    assert await api.call("POST", "/admin/errors/retry-all", 200) == {"retried": 1}
    assert await api.call("POST", "/admin/errors/retry-all?mapping=CONTACT", 200) == {"retried": 0}
    await api.call("DELETE", f"/admin/errors/{stuck['id']}", 204)
    assert await api.call("POST", "/admin/dead-letters/redrive", 200) == {"redriven": 0, "kept": 0,
                                                                          "kept_reasons": {}}

    before = await api.call("GET", "/admin/full-sync", 200)
    assert keys(before) == ["review", "run", "unavailable"] and before["run"] is None
    assert keys(before["review"][0]) == REVIEW_KEYS
    assert keys(await api.call("GET", "/admin/full-sync?review_lines=false", 200)) == ["run", "unavailable"]
    started = await api.call("POST", "/admin/full-sync", 202, json={"mappings": ["CURRENCY", "CUSTOMER"]})
    assert keys(started) == ["review", "run"] and keys(started["run"]) == RUN_KEYS
    assert [line["mapping"] for line in started["run"]["lines"]] == ["CURRENCY", "CUSTOMER"]
    assert keys(started["run"]["lines"][0]) == LINE_KEYS
    assert (await api.call("POST", "/admin/full-sync", 409))["detail"]
    await api.call("DELETE", "/admin/full-sync/lines/CURRENCY", 409)
    async with api.db.session() as session:
        for line in await jobs.run_lines(session, started["run"]["id"]):
            line.status, line.started_at, line.updated_at = jobs.ERROR, T0, T0 + timedelta(seconds=1)
            line.message = "failed"
    restarted = await api.call("DELETE", "/admin/full-sync/lines/CURRENCY", 200)
    assert keys(restarted) == ["run"] and keys(restarted["run"]) == RUN_KEYS
    after = await api.call("GET", "/admin/full-sync", 200)
    assert keys(after["run"]) == RUN_KEYS

    states = await api.call("GET", "/admin/subscriptions", 200)
    assert keys(states) == ["bc", "dataverse"]
    refreshed = await api.call("POST", "/admin/subscriptions/refresh")
    assert api.seen[-1][1] in (200, 502)
    assert keys(refreshed) == ["bc", "dataverse", "report"]
    assert keys(refreshed["report"]) == ["bc", "caught_up", "dataverse", "errors", "recreated"]
    assert [keys(s) for s in refreshed["bc"] + refreshed["dataverse"]] == [SUBSCRIPTION_KEYS] * (
        len(refreshed["bc"]) + len(refreshed["dataverse"]))

    caught = await api.call("GET", "/admin/catch-up", 200)
    assert keys(caught) == ["mappings"]
    assert await api.call("POST", "/admin/catch-up", 202, json={"mappings": ["CUSTOMER"]}) == {
        "requested": ["CUSTOMER"]}
    caught = await api.call("GET", "/admin/catch-up", 200)
    customer = next(m for m in caught["mappings"] if m["mapping"] == "CUSTOMER")
    assert keys(customer) == CATCH_UP_KEYS and customer["requested_at"]
    assert keys(await api.call("GET", "/admin/reconciles", 200)) == ["jobs"]
    assert keys(await api.call("GET", "/admin/records/search?q=x", 200)) == ["hits", "q"]

    # Timestamps: as today on each database (see `FORMS`).
    forms = {(what.split()[0] + " " + re.sub(r"/\d+", "/{id}", what.split()[1].split("?")[0]), suffix(stamp))
             for what, _, body in api.seen for stamp in timestamps(body)}
    postgres = database_url.startswith("postgresql")
    dump = os.environ.get("BCSYNC_WIRE_DUMP")
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        (Path(dump) / ("postgres.json" if postgres else "sqlite.json")).write_text(
            json.dumps([normalized(entry) for entry in api.seen], indent=1, sort_keys=True))
        (Path(dump) / ("postgres-forms.txt" if postgres else "sqlite-forms.txt")).write_text(
            "\n".join(map(repr, sorted(forms))))
    assert forms == (FORMS_POSTGRES if postgres else FORMS_SQLITE), sorted(forms)


# (route, timestamp suffix) of every timestamp answered. SQLite gives the store's times back without a zone
# (no suffix); PostgreSQL with UTC (`Z` through pydantic, `+00:00` where the api formats them itself); a row
# answered as the request wrote it keeps its aware time (`POST /admin/couplings`, the run a start created).
FORMS_SQLITE = {
    ("DELETE /admin/full-sync/lines/CURRENCY", ""), ("DELETE /admin/full-sync/lines/CURRENCY", "+00:00"),
    ("GET /admin/catch-up", "+00:00"), ("GET /admin/couplings", ""), ("GET /admin/errors", ""),
    ("GET /admin/full-sync", ""), ("GET /admin/full-sync", "+00:00"), ("GET /admin/mappings/CUSTOMER", ""),
    ("GET /admin/status", ""), ("GET /admin/sync-log", ""), ("POST /admin/couplings", "Z"),
    ("POST /admin/errors/{id}/retry", ""), ("POST /admin/full-sync", "+00:00"),
    ("POST /admin/subscriptions/refresh", "+00:00"),
}
FORMS_POSTGRES = {
    ("DELETE /admin/full-sync/lines/CURRENCY", "+00:00"), ("GET /admin/catch-up", "+00:00"),
    ("GET /admin/couplings", "Z"), ("GET /admin/errors", "Z"), ("GET /admin/full-sync", "+00:00"),
    ("GET /admin/mappings/CUSTOMER", "Z"), ("GET /admin/status", "+00:00"), ("GET /admin/sync-log", "Z"),
    ("POST /admin/couplings", "Z"), ("POST /admin/errors/{id}/retry", "Z"), ("POST /admin/full-sync", "+00:00"),
    ("POST /admin/subscriptions/refresh", "+00:00"),
}


def normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    if isinstance(value, str) and DATETIME.match(value):
        return "<time" + suffix(value) + ">"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value):
        return "<hex>"
    return value


JSON = {"content-type": "application/json"}
OBJECT = "the body must be a JSON object"
NAMES = 'mappings must be a non-empty list of mapping names, e.g. ["CUSTOMER"]'
# (how, request, status, the end of `detail`): the answers these routes gave when they read their body by hand.
# The details now start with `body: ` (service/app.py names where invalid input is), and a body that is not JSON
# under a JSON content type is refused by FastAPI itself ("<position>: JSON decode error").
BODY_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("no body", {}, 202, ""),
    ("whitespace, no content type", {"content": "  \n"}, 202, ""),
    ("empty object", {"content": "{}", "headers": JSON}, 202, ""),
    ("mappings null", {"json": {"mappings": None}}, 202, ""),
    ("one mapping", {"json": {"mappings": ["CUSTOMER"]}}, 202, ""),
    ("no content type", {"content": '{"mappings": ["CUSTOMER"]}'}, 202, ""),
    ("as text/plain (curl -d sends a form type)", {"content": '{"mappings": ["CUSTOMER"]}',
                                                   "headers": {"content-type": "application/x-www-form-urlencoded"}},
     202, ""),
    ("json null", {"content": "null", "headers": JSON}, 400, OBJECT),
    ("not json", {"content": "{", "headers": JSON}, 400, "JSON decode error"),
    ("not json, no content type", {"content": "{"}, 400, "the body is not valid JSON"),
    ("an array", {"content": "[1]", "headers": JSON}, 400, OBJECT),
    ("a string", {"content": '"CUSTOMER"', "headers": JSON}, 400, OBJECT),
    ("unknown key", {"json": {"other": 1}}, 400, "unknown field(s) other; allowed: mappings"),
    ("unknown key beside", {"json": {"mappings": ["CUSTOMER"], "other": 1}}, 400,
     "unknown field(s) other; allowed: mappings"),
    ("mappings a string", {"json": {"mappings": "CUSTOMER"}}, 400, NAMES),
    ("mappings empty", {"json": {"mappings": []}}, 400, NAMES),
    ("mappings a number", {"json": {"mappings": [1]}}, 400, NAMES),
    ("mappings an empty name", {"json": {"mappings": [""]}}, 400, NAMES),
    ("mappings an object", {"json": {"mappings": {"CUSTOMER": True}}}, 400, NAMES),
    ("unknown mapping", {"json": {"mappings": ["NOPE"]}}, 404, "unknown mapping 'NOPE'; mappings: SALESPEOPLE, "
     "CURRENCY, UNITOFMEASURE, CUSTOMER, CONTACT, ITEM-PRODUCT, RESOURCE-PRODUCT, CUSTPRCGRP-PRICE, SALESPRC-PRODPRICE, "
     "SALESORDER-ORDER, POSTEDSALESINV-INV"),
]


async def finish_runs(db: Database) -> None:
    """No full synchronization in progress: the next start may start one."""
    async with db.session() as session:
        run = await jobs.latest_run(session)
        for line in await jobs.run_lines(session, run.id) if run and run.id else []:
            line.status = jobs.FINISHED


@pytest.mark.parametrize("path", ["/admin/full-sync", "/admin/catch-up"])
async def test_the_job_routes_answer_every_shape_of_body_as_before(api: Api, path: str, database_url: str) -> None:
    answers = {}
    for how, kwargs, expected, detail in BODY_CASES:
        await finish_runs(api.db)
        body = await api.call("POST", path, **kwargs)
        answers[how] = (api.seen[-1][1], body if api.seen[-1][1] >= 400 else None)
        assert api.seen[-1][1] == expected, (how, api.seen[-1])
        if expected >= 400:
            assert body["detail"].endswith(detail), (how, body)
        elif path == "/admin/catch-up":
            assert body["requested"] == (["CUSTOMER"] if "CUSTOMER" in str(kwargs) else jobs.catch_up_mappings())
    await finish_runs(api.db)
    requested = await api.call("POST", path, json={"mappings": ["CUSTOMER", "CURRENCY"]})
    assert api.seen[-1][1] == 202
    names = requested["requested"] if path == "/admin/catch-up" else [x["mapping"] for x in requested["run"]["lines"]]
    assert names == ["CURRENCY", "CUSTOMER"]  # in dependency order, whatever the order asked
    # Without the token: 401 whatever the body, except one FastAPI cannot parse as the JSON it claims to be (400).
    for content, headers in (("{", {}), ('{"mappings": []}', JSON), ('{"mappings": ["CUSTOMER"]}', JSON)):
        assert (await api.client.post(f"{api.url}{path}", content=content, headers=headers)).status_code == 401
    assert (await api.client.post(f"{api.url}{path}", content="{", headers=JSON)).status_code == 400
    dump = os.environ.get("BCSYNC_WIRE_DUMP")
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        name = path.rsplit("/", 1)[1] + ("-pg" if database_url.startswith("postgresql") else "") + ".json"
        (Path(dump) / name).write_text(json.dumps(answers, indent=1))


async def test_setup_and_a_keeper_pass_at_once_register_each_step_once(api: Api,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Setup, the workers' keeper and a refresh each look for the Dataverse steps and BC subscriptions before
    creating them; at once, both would find none and both create one (every change then delivered twice, as a
    loaded e2e run showed). They share the `job:keeper` lease: while another holds it setup waits, and answers
    409 with nothing registered when it does not end in time."""
    monkeypatch.setattr(assisted_setup, "SETUP_LEASE_WAIT_SECONDS", 0.5)
    async with api.db.session() as session:
        assert await locks.acquire(session, [jobs.KEEPER_LEASE], "a-worker", 300)
    busy = await api.call("POST", "/admin/setup", 409)
    assert "keeper" in busy["detail"]
    assert await api.human.dv_find("serviceendpoints", "name eq 'bcsync'") == []
    async with api.db.session() as session:
        await locks.release(session, [jobs.KEEPER_LEASE], "a-worker")

    monkeypatch.setattr(assisted_setup, "SETUP_LEASE_WAIT_SECONDS", 60.0)
    await asyncio.gather(api.call("POST", "/admin/setup", 200), api.call("POST", "/admin/subscriptions/refresh"))
    steps = [s["name"] for s in await api.human.dv_find("sdkmessageprocessingsteps", "stage eq 40")]
    assert steps and sorted(steps) == sorted(set(steps)), steps
    assert len(await api.human.dv_find("serviceendpoints", "name eq 'bcsync'")) == 1
