"""The record history through the real api (`GET /admin/records/{mapping}/{side}/{id}/history`,
`GET /admin/records/search`), the CLI that reads it (`bcsync history`, `bcsync search`), and the sensitive mark of
a mapping's fields through the mappings API."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from schemas.mappings import BY_NAME, sensitive_fields
from schemas.vocabulary import Decision, FieldChange, Side
from schemas.vocabulary import Result as Outcome
from service.cli import app as cli_app
from service.store import couplings, history
from service.store.db import Database
from service.store.migrate import upgrade_async
from tests.harness import ADMIN_TOKEN, make_settings, running_api

BC = "5f1e0000-0000-4000-8000-00000000000a"
DV = "8a2c0000-0000-4000-8000-00000000000b"
LONELY = "6e2f0000-0000-4000-8000-00000000000c"  # a BC customer the filter keeps out: never coupled
ITEM_BC, ITEM_DV = "1e000000-0000-4000-8000-000000000001", "1d000000-0000-4000-8000-000000000002"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def event(source: str, correlation: str, minute: int) -> dict[str, Any]:
    at = T0 + timedelta(minutes=minute)
    return {"event_id": f"ev-{correlation}", "source": source, "change_type": "updated", "correlation_id": correlation,
            "received_at": at, "occurred_at": at - timedelta(seconds=2)}


def story() -> list[Any]:
    """A Sales user changes the phone, BC changes it again, the echo comes back, a conflicting edit loses."""
    common = {"mapping": "CUSTOMER", "kind": "live", "sensitive": {"email", "emailaddress1"}, "duration_ms": 120,
              "label": "10000 Adatum Corporation", "terms": ["10000", "info@adatum.example"], "bc_id": BC,
              "dataverse_id": DV}
    rows = [
        history.entry(side=Side.DATAVERSE, record_id=DV, result=Outcome.MODIFIED, decision=Decision.APPLIED,
                      reason=None, events=[event("dataverse", "dv-1", 0)], correlation_id="run-1",
                      changes=[FieldChange(Side.BC, "phoneNumber", "555-0100", "555-0111"),
                               FieldChange(Side.BC, "email", "a@adatum.example", "b@adatum.example")], **common),
        history.entry(side=Side.BC, record_id=BC, result=Outcome.MODIFIED, decision=Decision.APPLIED, reason=None,
                      events=[event("business_central", "bc-1", 1)], correlation_id="run-2",
                      changes=[FieldChange(Side.DATAVERSE, "telephone1", "555-0111", "555-0122")], **common),
        history.entry(side=Side.DATAVERSE, record_id=DV, result=Outcome.UNCHANGED, decision=Decision.ECHO,
                      reason="the record is as this integration left it", events=[event("dataverse", "dv-2", 2)],
                      correlation_id=None, changes=[], **common),
        history.entry(side=Side.DATAVERSE, record_id=DV, result=Outcome.MODIFIED, decision=Decision.CONFLICT_LOST,
                      reason="both sides changed; Business Central's newer change won",
                      events=[event("dataverse", "dv-3", 3)], correlation_id="run-4",
                      changes=[FieldChange(Side.DATAVERSE, "telephone1", "555-0199", "555-0122")], **common),
    ]
    for minute, row in enumerate(rows):
        row.at = T0 + timedelta(minutes=minute, seconds=5)
    lonely = history.entry(mapping="CUSTOMER", side=Side.BC, record_id=LONELY, bc_id=None, dataverse_id=None,
                           kind="reconcile", result=Outcome.SKIPPED, decision=Decision.FILTERED,
                           reason="excluded by the mapping's filter (blocked eq ' ')", events=[], changes=[],
                           sensitive=(), correlation_id=None, duration_ms=3, label="30000 Blocked Ltd",
                           terms=["30000"])
    lonely.at = T0
    # An item created in Sales by a run that wrote the entry before the coupling: it knew the BC id only.
    item = history.entry(mapping="ITEM-PRODUCT", side=Side.BC, record_id=ITEM_BC, bc_id=None, dataverse_id=None,
                         kind="full", result=Outcome.INSERTED, decision=Decision.CREATED, reason=None, events=[],
                         changes=[FieldChange(Side.DATAVERSE, "name", None, "Bicycle")], sensitive=(),
                         correlation_id="run-9", duration_ms=80, label="1000 Bicycle", terms=["1000"])
    return [*rows, lonely, item]


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"{self.url}{path}", params=params, headers=AUTH)


@pytest.fixture
async def api(tmp_path: Path, namespace: str) -> AsyncIterator[Api]:
    url = f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"
    await upgrade_async(url)
    db = Database(url)
    async with db.session() as session:
        session.add_all(story())
        await couplings.save(session, "CUSTOMER", BC, DV)
        await couplings.save(session, "CURRENCY", "c0000000-0000-4000-8000-000000000001",
                             "d0000000-0000-4000-8000-000000000002")  # coupled, no history
        await couplings.save(session, "ITEM-PRODUCT", ITEM_BC, ITEM_DV)
    await db.close()
    # The api as it runs: with the real broker (an unreachable one logs its retries to stdout, into the CLI's output).
    settings = make_settings(url, namespace)
    async with running_api(settings) as (base, _), httpx.AsyncClient() as c:
        yield Api(base, c)


async def test_either_sides_id_gives_the_pairs_story_in_order(api: Api) -> None:
    by_bc = (await api.get(f"/admin/records/CUSTOMER/bc/{BC}/history")).json()
    by_dataverse = await api.get(f"/admin/records/CUSTOMER/dataverse/{DV.upper()}/history")
    assert by_dataverse.status_code == 200
    assert by_dataverse.json()["entries"] == by_bc["entries"]
    assert {k: by_bc[k] for k in ("mapping", "side", "id", "bc_id", "dataverse_id", "coupled", "next_before")} == {
        "mapping": "CUSTOMER", "side": "bc", "id": BC, "bc_id": BC, "dataverse_id": DV, "coupled": True,
        "next_before": None}
    entries = by_bc["entries"]
    assert [(e["side"], e["decision"], e["result"]) for e in entries] == [
        ("dataverse", "applied", "modified"), ("bc", "applied", "modified"), ("dataverse", "echo", "unchanged"),
        ("dataverse", "conflict-lost", "modified")]
    first = entries[0]
    assert first["changes"] == [
        {"side": "bc", "field": "phoneNumber", "old": "555-0100", "new": "555-0111", "sensitive": False},
        {"side": "bc", "field": "email", "old": None, "new": None, "sensitive": True}]
    assert first["events"] == [{"event_id": "ev-dv-1", "source": "dataverse", "change_type": "updated",
                                "correlation_id": "dv-1", "received_at": "2026-12-01T09:00:00+00:00",
                                "occurred_at": "2026-12-01T08:59:58+00:00"}]
    assert (first["correlation_id"], first["duration_ms"], first["kind"], first["label"]) == (
        "run-1", 120, "live", "10000 Adatum Corporation")
    assert datetime.fromisoformat(first["at"]) == T0 + timedelta(seconds=5)
    assert entries[3]["reason"] == "both sides changed; Business Central's newer change won"
    assert entries[3]["changes"][0]["old"] == "555-0199" and entries[3]["changes"][0]["new"] == "555-0122"


async def test_pages_go_back_in_time(api: Api) -> None:
    path = f"/admin/records/CUSTOMER/bc/{BC}/history"
    newest = (await api.get(path, limit=3)).json()
    assert [e["decision"] for e in newest["entries"]] == ["applied", "echo", "conflict-lost"]
    assert newest["next_before"] == newest["entries"][0]["id"]
    older = (await api.get(path, limit=3, before=newest["next_before"])).json()
    assert [(e["side"], e["decision"]) for e in older["entries"]] == [("dataverse", "applied")]
    assert older["next_before"] is None
    assert (await api.get(path, limit=4)).json()["next_before"] is None  # exactly a page: no empty page after it


async def test_an_uncoupled_record_unknown_ids_and_invalid_input(api: Api) -> None:
    lonely = (await api.get(f"/admin/records/CUSTOMER/bc/{LONELY}/history")).json()
    assert (lonely["coupled"], lonely["bc_id"], lonely["dataverse_id"]) == (False, LONELY, None)
    assert [(e["decision"], e["kind"], e["reason"]) for e in lonely["entries"]] == [
        ("filtered", "reconcile", "excluded by the mapping's filter (blocked eq ' ')")]
    currency = (await api.get("/admin/records/CURRENCY/dataverse/d0000000-0000-4000-8000-000000000002/history")).json()
    assert (currency["coupled"], currency["entries"], currency["bc_id"]) == (
        True, [], "c0000000-0000-4000-8000-000000000001")
    item = (await api.get(f"/admin/records/ITEM-PRODUCT/dataverse/{ITEM_DV}/history")).json()
    assert (item["coupled"], item["bc_id"], item["dataverse_id"]) == (True, ITEM_BC, ITEM_DV)
    assert [(e["decision"], e["changes"][0]["new"]) for e in item["entries"]] == [("created", "Bicycle")]
    missing = await api.get(f"/admin/records/CUSTOMER/dataverse/{BC}/history")  # a BC id is no Dataverse id
    assert missing.status_code == 404 and "no history" in missing.json()["detail"]
    assert (await api.get(f"/admin/records/CONTACT/bc/{BC}/history")).status_code == 404  # another mapping
    unknown = await api.get(f"/admin/records/NOPE/bc/{BC}/history")
    assert unknown.status_code == 404 and "no mapping 'NOPE'" in unknown.json()["detail"]
    # Invalid input is a 400 in this api (service/app.py invalid_request), as everywhere else.
    for path, params in ((f"/admin/records/CUSTOMER/crm/{BC}/history", {}),
                         (f"/admin/records/CUSTOMER/bc/{'x' * 65}/history", {}),
                         (f"/admin/records/CUSTOMER/bc/{BC}/history", {"limit": 0}),
                         (f"/admin/records/CUSTOMER/bc/{BC}/history", {"limit": 501}),
                         (f"/admin/records/CUSTOMER/bc/{BC}/history", {"before": 0}),
                         ("/admin/records/search", {"q": ""}), ("/admin/records/search", {"q": "x" * 201}),
                         ("/admin/records/search", {}), ("/admin/records/search", {"q": "a", "limit": 201})):
        assert (await api.get(path, **params)).status_code == 400, (path, params)
    refused = await api.client.get(f"{api.url}/admin/records/search", params={"q": "adatum"})
    assert refused.status_code == 401
    assert (await api.get(f"/admin/records/CUSTOMER/bc/{'x' * 64}/history")).status_code == 404


async def test_search_across_mappings(api: Api) -> None:
    found = (await api.get("/admin/records/search", q="ADATUM")).json()
    assert found == {"q": "ADATUM", "hits": [
        {"mapping": "CUSTOMER", "bc_id": BC, "dataverse_id": DV, "label": "10000 Adatum Corporation",
         "last_decision": "conflict-lost", "last_at": "2026-12-01T09:03:05Z", "coupled": True}]}
    assert (await api.get("/admin/records/search", q="info@adatum")).json()["hits"] == found["hits"]
    assert (await api.get("/admin/records/search", q=DV.upper())).json()["hits"] == found["hits"]
    by_lonely = (await api.get("/admin/records/search", q="30000")).json()["hits"]
    assert [(h["bc_id"], h["dataverse_id"], h["last_decision"], h["coupled"]) for h in by_lonely] == [
        (LONELY, None, "filtered", False)]
    coupled_only = (await api.get("/admin/records/search", q="c0000000-0000-4000-8000-000000000001")).json()["hits"]
    assert coupled_only == [{"mapping": "CURRENCY", "bc_id": "c0000000-0000-4000-8000-000000000001",
                             "dataverse_id": "d0000000-0000-4000-8000-000000000002", "label": None,
                             "last_decision": None, "last_at": None, "coupled": True}]
    assert (await api.get("/admin/records/search", q="%")).json()["hits"] == []
    assert (await api.get("/admin/records/search", q="nothing like it")).json() == {"q": "nothing like it",
                                                                                   "hits": []}


async def test_both_routes_are_documented_with_their_models(api: Api) -> None:
    document = (await api.client.get(f"{api.url}/openapi.json")).json()
    history_op = document["paths"]["/admin/records/{mapping}/{side}/{record_id}/history"]["get"]
    search_op = document["paths"]["/admin/records/search"]["get"]
    ok = history_op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/RecordHistoryPage"}
    assert search_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SearchResult"}
    assert {"400", "401", "404", "503"} <= set(history_op["responses"])
    schemas = document["components"]["schemas"]
    assert {"HistoryEntry", "HistoryChange", "HistoryEvent", "SearchHit"} <= set(schemas)
    assert set(schemas["Decision"]["enum"]) == {d.value for d in Decision}


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")  # the in-process api's own log, on the same stdout


@dataclass
class Shown:
    exit_code: int
    output: str


def cli(*args: str) -> Shown:
    result = CliRunner().invoke(cli_app, list(args), env={"BCSYNC_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"})
    lines = [line for line in result.output.splitlines() if not LOG_LINE.match(line)]
    return Shown(result.exit_code, "\n".join(lines) + "\n")


async def test_the_cli_prints_the_timeline_and_the_hits(api: Api, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file
    # No --side: the Dataverse id is not a BC id (404 on the first try, not an error), then found.
    shown = await asyncio.to_thread(cli, "history", "CUSTOMER", DV, "--url", api.url)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"CUSTOMER  bc {BC}  ⇄  dataverse {DV}  (coupled)"
    assert lines[1] == "  10000 Adatum Corporation"
    text = shown.output
    assert [line for line in lines if line.startswith("2026-")] == [
        "2026-12-01 09:00:05 UTC  from Dynamics 365 Sales  applied (modified, live, 120 ms)  request run-1",
        "2026-12-01 09:01:05 UTC  from Business Central  applied (modified, live, 120 ms)  request run-2",
        "2026-12-01 09:02:05 UTC  from Dynamics 365 Sales  echo (unchanged, live, 120 ms)",
        "2026-12-01 09:03:05 UTC  from Dynamics 365 Sales  conflict-lost (modified, live, 120 ms)  request run-4"]
    assert '    BC phoneNumber: "555-0100" → "555-0111"' in lines
    assert "    BC email: changed (sensitive)" in lines
    assert "a@adatum.example" not in text
    assert '    Sales telephone1: "555-0199" → "555-0122"' in lines
    assert "    why: both sides changed; Business Central's newer change won" in lines
    assert "    event: updated in Sales, received 2026-12-01 09:00:00 UTC, correlation dv-1" in lines
    assert "    event: updated in BC, received 2026-12-01 09:01:00 UTC, correlation bc-1" in lines

    paged = await asyncio.to_thread(cli, "history", "CUSTOMER", BC, "--side", "bc", "--limit", "1", "--url", api.url)
    assert paged.exit_code == 0, paged.output
    assert "conflict-lost" in paged.output and "echo" not in paged.output
    before = json.loads((await asyncio.to_thread(cli, "history", "CUSTOMER", BC, "--limit", "1", "--json",
                                                 "--url", api.url)).output)["next_before"]
    assert f"(older entries: --before {before})" in paged.output
    older = await asyncio.to_thread(cli, "history", "CUSTOMER", BC, "--limit", "1", "--before", str(before),
                                    "--url", api.url)
    assert "echo (unchanged" in older.output and "conflict-lost" not in older.output

    as_json = await asyncio.to_thread(cli, "history", "CUSTOMER", BC, "--json", "--url", api.url)
    assert len(json.loads(as_json.output)["entries"]) == 4
    missing = await asyncio.to_thread(cli, "history", "CUSTOMER", "no-such-id", "--url", api.url)
    assert missing.exit_code == 1 and "no history of CUSTOMER dataverse record no-such-id" in missing.output
    wrong_side = await asyncio.to_thread(cli, "history", "CUSTOMER", BC, "--side", "crm", "--url", api.url)
    assert wrong_side.exit_code == 2

    hits = await asyncio.to_thread(cli, "search", "adatum", "--url", api.url)
    assert hits.exit_code == 0, hits.output
    [header, row] = hits.output.splitlines()
    assert header.split() == ["mapping", "bc", "id", "dataverse", "id", "last", "decision", "label"]
    assert row.split() == ["CUSTOMER", BC, DV, "2026-12-01", "09:03:05", "UTC", "conflict-lost", "10000", "Adatum",
                           "Corporation"]
    lonely = await asyncio.to_thread(cli, "search", "30000", "--url", api.url)
    assert lonely.output.rstrip().endswith("30000 Blocked Ltd  (not coupled)")
    none = await asyncio.to_thread(cli, "search", "zzz", "--url", api.url)
    assert none.output.strip() == "nothing found for 'zzz'"


async def test_fields_marked_sensitive_through_the_mappings_api(api: Api) -> None:
    listed = (await api.get("/admin/mappings")).json()
    customer = next(m for m in listed if m["name"] == "CUSTOMER")
    assert all(f["sensitive"] is False for f in customer["fields"])
    change = {"fields": [{"bc": "phoneNumber", "dataverse": "telephone1", "sensitive": True}]}
    patch = f"{api.url}/admin/mappings/CUSTOMER"
    assert (await api.client.patch(patch, json=change, headers=AUTH)).status_code == 409  # not on hold
    assert (await api.client.post(f"{patch}/hold", headers=AUTH)).status_code == 200
    changed = await api.client.patch(patch, json=change, headers=AUTH)
    assert changed.status_code == 200, changed.text
    wrong = await api.client.patch(patch, json={"fields": [{"bc": "phoneNumber", "dataverse": "telephone1",
                                                            "sensitive": "maybe"}]}, headers=AUTH)
    assert wrong.status_code == 400
    for shown in ((await api.get("/admin/mappings/CUSTOMER")).json(),
                  next(m for m in (await api.get("/admin/mappings")).json() if m["name"] == "CUSTOMER")):
        marks = {f["bc"]: f["sensitive"] for f in shown["fields"]}
        assert marks["phoneNumber"] is True and marks["email"] is False
    stored = json.loads((await api.get("/admin/mappings/CUSTOMER")).json()["history"][-1]["config"])
    assert stored["fields"] == [{"bc": "phoneNumber", "dataverse": "telephone1", "sensitive": True}]
    from schemas.mapping_config import effective

    assert sensitive_fields(effective(BY_NAME["CUSTOMER"], stored)) == {"phoneNumber", "telephone1"}
