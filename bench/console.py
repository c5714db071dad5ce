"""Console benchmark: page loads of the operator console (/console) on a store of 100,000 couplings, 1,000 open
errors and 100,000 record-history entries of the last hour, on SQLite and on PostgreSQL.

    python -m bench.console [--database sqlite|postgres|both] [--requests 200] [--live-requests 50] [--no-profile]
                            [--json PATH] [--from-json PATH]

Per database: a fresh store (SQLite: a file in a temporary directory; PostgreSQL: a fresh database on
127.0.0.1:5432, dropped afterwards) brought to the newest schema by `service.store.migrate.upgrade_async`, seeded
with rows as the service writes them (couplings over the mappings, mostly CUSTOMER and ITEM-PRODUCT; open and
resolved errors with their events; history entries built by `service.store.history.entry`, with `lag_ms`; the
job log; a finished full synchronization; published outbox events), then `bcsync api` as its own process beside
`bcsync sandbox` (BC, Dataverse and Entra), `POST /admin/setup` (it seeds the mapping configs and registers the
webhooks as in an installation), and statistics gathered (ANALYZE) as the workers' prune job and PostgreSQL's
autovacuum would have done.

A signed session cookie (Starlette's SessionMiddleware format) signs in an Operator. Every page is warmed up, then
requested `--requests` times one after the other by this process (httpx, keep-alive), in rounds that alternate
the pages and a baseline, `GET /healthz` of the same api, so that the machine's noise hits all of them alike.
Reports p50/p95/p99/max per page and the ratio p50 page / p50 healthz; pages that ask Business Central or
Dataverse (the sandbox, on this machine) are listed apart. A page that misses 200 ms at p95 is profiled in
this process (the same app, `create_app`, on the same store, through httpx's ASGI transport): every SQL
statement timed, and cProfile's functions. Writes the "Console page loads" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import cProfile
import hashlib
import io
import json
import math
import os
import pstats
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import ROOT, free_port, machine, start, wait_port, write_section
from bench.history_size import CITIES, COMPANIES, CONTACT_FIELDS, CUSTOMER_FIELDS, FIRST, LAST, SUFFIXES
from sandbox.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_TENANT_ID
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME, MAPPINGS
from schemas.vocabulary import Decision, FieldChange, Result, Side
from service.store import history, jobs
from service.store.db import Database
from service.store.job_models import FullSyncLine, FullSyncRun
from service.store.migrate import upgrade_async
from service.store.models import Coupling, OutboxEvent, RecordHistory, SyncError, SyncJob
from service.topology import Topology
from tests.console_session import session_cookie, signed_in_session

BROKER = os.environ.get("BCSYNC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN = os.environ.get("BCSYNC_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
GOAL_MS = 200.0
ADMIN_TOKEN = "bench-console-admin-token"
WEBHOOK_KEY, CLIENT_STATE = "bench-console-webhook-key", "bench-console-client-state"
SEARCH_WORD = "adatum"  # in the names (labels) of one customer in twenty

# 100,000 couplings: mostly customers and items, as an installation with a full synchronization behind it.
COUPLINGS = {"CUSTOMER": 0.42, "ITEM-PRODUCT": 0.38, "CONTACT": 0.12, "SALESORDER-ORDER": 0.04,
             "POSTEDSALESINV-INV": 0.023, "RESOURCE-PRODUCT": 0.015, "SALESPRC-PRODPRICE": 0.001,
             "SALESPEOPLE": 0.0004, "CUSTPRCGRP-PRICE": 0.0002, "UNITOFMEASURE": 0.00028, "CURRENCY": 0.00012}
# the last hour's runs (history entries) by mapping
RUNS = {"CUSTOMER": 0.45, "ITEM-PRODUCT": 0.30, "CONTACT": 0.12, "SALESORDER-ORDER": 0.06, "POSTEDSALESINV-INV": 0.03,
        "RESOURCE-PRODUCT": 0.02, "SALESPRC-PRODPRICE": 0.02}
# open errors by mapping
ERRORS = {"CUSTOMER": 0.35, "ITEM-PRODUCT": 0.25, "CONTACT": 0.15, "SALESORDER-ORDER": 0.15, "POSTEDSALESINV-INV": 0.05,
          "RESOURCE-PRODUCT": 0.03, "SALESPRC-PRODPRICE": 0.02}
ITEMS = ("Bicycle", "Front Wheel", "Rear Wheel", "Handlebars", "Saddle", "Chain", "Pedal", "Frame", "Brake Set",
         "Bell", "Mudguard", "Lamp", "Inner Tube", "Tyre", "Gear Lever", "Kickstand")
VARIANTS = ("", " Black", " Red", " Blue", " 26 in", " 28 in", " Pro", " Kids", " XL", " Carbon")


# ---- the store -------------------------------------------------------------------------------------------------

@dataclass
class Pair:
    mapping: str
    bc_id: str
    dataverse_id: str
    number: str
    name: str
    email: str
    phone: str


@dataclass
class Seeded:
    couplings: int = 0
    open_errors: int = 0
    resolved_errors: int = 0
    history: int = 0
    outbox: int = 0
    jobs: int = 0
    seconds: float = 0.0
    record: tuple[str, str, int] = ("", "", 0)  # (mapping, bc id, entries) of the pair whose page is measured
    search_hits: int = 0  # history entries whose search terms hold SEARCH_WORD
    by_mapping: dict[str, int] = field(default_factory=dict)


def guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def split(total: int, shares: dict[str, float]) -> dict[str, int]:
    """`total` over the keys by their shares; the first key takes what rounding leaves."""
    scale = sum(shares.values())
    out = {k: int(total * v / scale) for k, v in shares.items()}
    first = next(iter(out))
    out[first] += total - sum(out.values())
    return out


def phone(rng: random.Random) -> str:
    return f"+1 {rng.randint(200, 999)} 555 {rng.randint(0, 9999):04d}"


def make_pair(rng: random.Random, mapping: str, i: int) -> Pair:
    if mapping == "CUSTOMER":
        name = f"{COMPANIES[i % len(COMPANIES)]}{SUFFIXES[(i // len(COMPANIES)) % len(SUFFIXES)]}"
        web = f"{name.split()[0].lower().strip('.,')}{i}.example.com"
        return Pair(mapping, guid(rng), guid(rng), f"C{10000 + i}", name, f"info@{web}", phone(rng))
    if mapping == "CONTACT":
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        web = f"{COMPANIES[i % len(COMPANIES)].split()[0].lower().strip('.,')}{i}.example.com"
        return Pair(mapping, guid(rng), guid(rng), f"CT{200000 + i}", name,
                    f"{name.replace(' ', '.').lower()}@{web}", phone(rng))
    if mapping in ("ITEM-PRODUCT", "RESOURCE-PRODUCT", "SALESPRC-PRODPRICE"):
        name = f"{ITEMS[i % len(ITEMS)]}{VARIANTS[(i // len(ITEMS)) % len(VARIANTS)]}"
        prefix = {"ITEM-PRODUCT": "", "RESOURCE-PRODUCT": "R", "SALESPRC-PRODPRICE": "P"}[mapping]
        return Pair(mapping, guid(rng), guid(rng), f"{prefix}{1000 + i}", name, "", "")
    if mapping in ("SALESORDER-ORDER", "POSTEDSALESINV-INV"):
        number = f"{'SO' if mapping == 'SALESORDER-ORDER' else 'PSI'}{100000 + i}"
        return Pair(mapping, guid(rng), guid(rng), number, f"{number} {COMPANIES[i % len(COMPANIES)]}", "", "")
    return Pair(mapping, guid(rng), guid(rng), f"{mapping[:3]}{i:03d}", f"{mapping.title()} {i}", "", "")


def coupling_row(rng: random.Random, pair: Pair, now: datetime) -> dict[str, Any]:
    created = now - timedelta(days=rng.uniform(1, 400))
    modified = created + (now - created) * rng.random()
    info = json.dumps({"bc_number": pair.number}) if pair.mapping == "SALESORDER-ORDER" else None
    return {"mapping": pair.mapping, "bc_id": pair.bc_id, "dataverse_id": pair.dataverse_id, "bc_modified": modified,
            "dataverse_modified": modified + timedelta(seconds=rng.uniform(0.2, 5)),
            "bc_hash": hashlib.sha256(f"bc{pair.bc_id}{modified}".encode()).hexdigest(),
            "dataverse_hash": hashlib.sha256(f"dv{pair.dataverse_id}{modified}".encode()).hexdigest(),
            "last_result": rng.choice(("modified", "modified", "unchanged", "inserted", "coupled")), "attempts": 0,
            "info": info, "written": rng.choice(("bc", "dataverse", None)), "created_at": created,
            "updated_at": modified}


def event_of(rng: random.Random, mapping: str, side: Side, record_id: str, at: datetime,
             change: str = "updated") -> ChangeEvent:
    rule = BY_NAME[mapping]
    entity = rule.bc_entity if side is Side.BC else rule.dataverse_entity
    correlation = str(uuid.UUID(int=rng.getrandbits(128)))
    return ChangeEvent(source=side.source, entity=re.sub(r"[^A-Za-z0-9_]", "", entity) or "entity",
                       record_id=record_id, change_type=change, occurred_at=at - timedelta(seconds=rng.uniform(0.3, 4)),
                       received_at=at, dedupe_key=f"{side.source}:{entity}:{record_id}:{at.timestamp():.3f}",
                       correlation_id=correlation, company_id=DEMO_COMPANY_ID if side is Side.BC else None)


def history_row(rng: random.Random, pair: Pair, at: datetime) -> RecordHistory:
    """One run of the pair: an update (70 %), a run that wrote nothing (20 %) or a create (10 %)."""
    side = Side.BC if BY_NAME[pair.mapping].direction.value == "to_crm" or (
        BY_NAME[pair.mapping].direction.value == "both" and rng.random() < 0.5) else Side.DATAVERSE
    other = side.other
    roll = rng.random()
    changes: list[FieldChange] = []
    lag: int | None = None
    if roll < 0.7:
        fields = CONTACT_FIELDS if pair.mapping == "CONTACT" else CUSTOMER_FIELDS
        for bc_field, dv_field, kind in rng.sample(fields, 1 if rng.random() < 0.75 else 2):
            new = phone(rng) if kind == "phone" else f"{rng.choice(FIRST).lower()}@{pair.number.lower()}.example.com" \
                if kind == "email" else rng.choice(CITIES) if kind == "city" else f"{pair.name} {rng.randint(1, 9)}"
            changes.append(FieldChange(other, bc_field if other is Side.BC else dv_field, pair.phone or None, new))
        result, decision, reason = Result.MODIFIED, Decision.APPLIED, f"changed in {side.system}"
        lag = int(rng.lognormvariate(math.log(800), 0.9))
    elif roll < 0.9:
        result, decision = Result.UNCHANGED, Decision.ECHO
        reason = f"the record is as this integration wrote it to {side.system}: our own write's echo"
    else:
        for bc_field, dv_field, _ in CUSTOMER_FIELDS:
            changes.append(FieldChange(other, bc_field if other is Side.BC else dv_field, None, pair.name))
        result, decision, reason = Result.INSERTED, Decision.CREATED, f"new in {side.system}: created in {other.system}"
        lag = int(rng.lognormvariate(math.log(1500), 0.9))
    record_id = pair.bc_id if side is Side.BC else pair.dataverse_id
    event = event_of(rng, pair.mapping, side, record_id, at).model_dump(mode="json")
    row = history.entry(mapping=pair.mapping, side=side, record_id=record_id, bc_id=pair.bc_id,
                        dataverse_id=pair.dataverse_id, kind="live", result=result, decision=decision, reason=reason,
                        events=[event], changes=changes, sensitive=(), correlation_id=event["correlation_id"],
                        duration_ms=rng.randint(40, 900), label=f"{pair.number} {pair.name}",
                        terms=[pair.number, pair.name, pair.email, pair.phone, pair.bc_id, pair.dataverse_id],
                        lag_ms=lag)
    row.at = at
    return row


ERROR_MESSAGES = (
    ("dependency", "{dep} record {dep_id} is not coupled, and {dep} does not synchronize toward {system}"),
    ("dependency", "{dep} record {dep_id} does not exist"),
    ("api", "400 Application_FieldValidationException: Blocked must be equal to 'No'  in Item: No.={number}. "
            "Current value is 'Yes'."),
    ("api", "400 Internal_RecordNotFound: The Customer does not exist. Identification fields and values: "
            "No.='{number}'"),
    ("api", "400 0x80040237: A record with matching key values already exists."),
    ("api", "403 0x80040220: Principal user (Id={user}) is missing prvWriteAccount privilege"),
    ("api", "429 TooManyRequests: Number of requests exceeded the limit of 6000 over time window of 300 seconds."),
    ("conflict", "both sides changed: bc {{'phoneNumber': '{phone}'}} / dataverse {{'telephone1': '+1 404 555 0101'}}"),
)


def error_row(rng: random.Random, pair: Pair, now: datetime, state: str, coupled: bool) -> dict[str, Any]:
    rule = BY_NAME[pair.mapping]
    side = Side.BC if rule.direction.value == "to_crm" or (rule.direction.value == "both" and rng.random() < 0.5) \
        else Side.DATAVERSE
    record_id = (pair.bc_id if side is Side.BC else pair.dataverse_id) if coupled else guid(rng)
    kind, template = rng.choice(ERROR_MESSAGES)
    dep = rule.depends_on[0] if rule.depends_on else "CURRENCY"
    dep_id = guid(rng)
    message = template.format(dep=dep, dep_id=dep_id, system=side.other.system, number=pair.number,
                              user=DEMO_CLIENT_ID, phone=pair.phone or "+1 404 555 0100")
    first = now - timedelta(hours=rng.uniform(0.1, 24 * 14))
    last = first + (now - first) * rng.random()
    event = event_of(rng, pair.mapping, side, record_id, last, "updated" if coupled else "created")
    return {"mapping": pair.mapping, "source": side.source, "source_id": record_id,
            "destination_id": (pair.dataverse_id if side is Side.BC else pair.bc_id) if coupled else None,
            "message": message[:2000], "attempts": rng.randint(1, 6), "state": state,
            "waiting_for": f"{dep}:{side.value}:{dep_id}" if kind == "dependency" else None,
            "event": event.model_dump_json(), "first_seen": first, "last_seen": last}


async def insert_rows(db: Database, model: Any, rows: list[dict[str, Any]], batch: int = 5000) -> None:
    table = model.__table__
    for start_at in range(0, len(rows), batch):
        async with db.session() as session:
            await session.execute(insert(table), rows[start_at:start_at + batch])


async def seed(url: str, couplings_n: int, errors_n: int, history_n: int, seed_value: int = 15) -> Seeded:
    started = time.perf_counter()
    rng = random.Random(seed_value)
    await upgrade_async(url)
    db = Database(url)
    now = datetime.now(UTC)
    out = Seeded()
    try:
        pools: dict[str, list[Pair]] = {}
        rows: list[dict[str, Any]] = []
        for mapping, n in split(couplings_n, COUPLINGS).items():
            pools[mapping] = [make_pair(rng, mapping, i) for i in range(n)]
            rows += [coupling_row(rng, p, now) for p in pools[mapping]]
        await insert_rows(db, Coupling, rows)
        out.couplings, out.by_mapping = len(rows), {m: len(p) for m, p in pools.items()}

        # History: the last hour's runs, four in five of them on a hot fifth of the records (records that change
        # change again), the newest a moment ago.
        entries: list[dict[str, Any]] = []
        counts: Counter[tuple[str, str]] = Counter()
        columns = [c.name for c in RecordHistory.__table__.columns if c.name != "id"]  # type: ignore[attr-defined]
        for mapping, n in split(history_n, RUNS).items():
            pool = pools[mapping]
            hot = pool[: max(1, len(pool) // 5)]
            for _ in range(n):
                pair = rng.choice(hot) if rng.random() < 0.8 else rng.choice(pool)
                row = history_row(rng, pair, now - timedelta(seconds=rng.uniform(1, 3590)))
                counts[(mapping, pair.bc_id)] += 1
                out.search_hits += SEARCH_WORD in (row.search or "")
                entries.append({c: getattr(row, c) for c in columns})
        entries.sort(key=lambda e: e["at"])  # inserted in time order, as the engine writes them
        await insert_rows(db, RecordHistory, entries)
        out.history = len(entries)
        (mapping, bc_id), n = max(((k, v) for k, v in counts.items() if k[0] == "CUSTOMER"), key=lambda kv: kv[1])
        out.record = (mapping, bc_id, n)

        # Errors: open ones (two in three of coupled records, the rest of records that could not be created),
        # and as many resolved ones (the list skips them).
        errors: list[dict[str, Any]] = []
        seen: set[tuple[str, str, str]] = set()
        for state, total in (("open", errors_n), ("resolved", errors_n)):
            for mapping, n in split(total, ERRORS).items():
                made = 0
                while made < n:
                    failed = error_row(rng, rng.choice(pools[mapping]), now, state, coupled=rng.random() < 0.67)
                    key = (failed["mapping"], failed["source"], failed["source_id"])
                    if key in seen:
                        continue
                    seen.add(key)
                    errors.append(failed)
                    made += 1
        await insert_rows(db, SyncError, errors)
        out.open_errors, out.resolved_errors = errors_n, errors_n

        # The job log: a counter row per mapping, direction and hour of the last two days, and a full
        # synchronization that finished a week ago.
        jobs: list[dict[str, Any]] = []
        hour0 = now.replace(minute=0, second=0, microsecond=0)
        for mapping in RUNS:
            directions = ("to_crm", "from_crm") if BY_NAME[mapping].direction.value == "both" else (
                BY_NAME[mapping].direction.value,)
            for direction in directions:
                for h in range(48):
                    hour = hour0 - timedelta(hours=h)
                    jobs.append({"mapping": mapping, "direction": direction, "kind": "live",
                                 "bucket": hour.strftime("%Y-%m-%dT%H:00Z"), "started_at": hour,
                                 "finished_at": min(now, hour + timedelta(minutes=59)),
                                 "inserted": rng.randint(0, 200), "modified": rng.randint(100, 3000),
                                 "deleted": rng.randint(0, 5), "unchanged": rng.randint(50, 1000),
                                 "skipped": rng.randint(0, 20), "failed": rng.randint(0, 10), "coupled": 0})
        await insert_rows(db, SyncJob, jobs)
        out.jobs = len(jobs)
        week = now - timedelta(days=7)
        async with db.session() as session:
            run = FullSyncRun(created_at=week, finished_at=week + timedelta(minutes=40))
            session.add(run)
            await session.flush()
            for position, rule in enumerate(MAPPINGS):
                done = week + timedelta(minutes=2 + 3 * position)
                session.add(FullSyncLine(run_id=run.id or 0, mapping=rule.name, position=position,
                                         depends_on=json.dumps(list(rule.depends_on)), status="finished",
                                         recommendation="full", attempt=1, started_at=done - timedelta(minutes=2),
                                         finished_at=done, updated_at=done,
                                         inserted=out.by_mapping.get(rule.name, 0), unchanged=0))

        # The outbox keeps published events for the dedupe window: the last hour's deliveries.
        outbox_rows = []
        for i, e in enumerate(entries):
            received = e["at"] - timedelta(milliseconds=300)
            events = json.loads(e["events"])
            outbox_rows.append({
                "dedupe_key": f"{events[0]['event_id']}:{i}", "routing_key": f"{events[0]['source']}.entity",
                "source": events[0]["source"], "entity": e["mapping"].lower(),
                "correlation_id": events[0]["correlation_id"] or str(i),
                "payload": json.dumps({"record_id": e["bc_id"], "changed": ["telephone1"], "at": received.isoformat()}),
                "created_at": received, "published_at": received + timedelta(milliseconds=20), "attempts": 1})
        await insert_rows(db, OutboxEvent, outbox_rows)
        out.outbox = len(outbox_rows)
    finally:
        await db.close()
    out.seconds = time.perf_counter() - started
    return out


async def analyze(url: str) -> None:
    """Planner statistics, as an installation has them (SQLite: the prune job's ANALYZE; PostgreSQL: autovacuum)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT") if not url.startswith("sqlite") \
        else create_async_engine(url)
    async with engine.connect() as connection:
        await connection.exec_driver_sql("ANALYZE")
        if url.startswith("sqlite"):
            await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    await engine.dispose()


@contextlib.asynccontextmanager
async def fresh_postgres() -> Any:
    name = f"bcsync_bench_console_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


# ---- sign-in and pages --------------------------------------------------------------------------------------

def signed_in(secret: str) -> str:
    """The cookie the sign-in callback would have left for an Operator (tests/console_session.py: Starlette's
    SessionMiddleware format, base64 JSON signed by itsdangerous.TimestampSigner under the api's secret)."""
    return session_cookie(signed_in_session(("Operator",), "Bench Operator"), secret)


def pages(seeded: Seeded) -> list[tuple[str, str, bool]]:
    """(name, path, asks the live systems)."""
    mapping, bc_id, _ = seeded.record
    return [("overview", "/console/", False), ("errors", "/console/errors", False),
            ("errors of CUSTOMER", "/console/errors?mapping=CUSTOMER", False),
            (f"records search \"{SEARCH_WORD}\"", f"/console/records?q={SEARCH_WORD}", False),
            ("record pair with history", f"/console/records/{mapping}/bc/{bc_id}", False),
            ("mappings", "/console/mappings", False), ("mapping CUSTOMER", "/console/mappings/CUSTOMER", False),
            ("subscriptions", "/console/subscriptions", False),  # the keeper's stored state: the store only
            ("full sync (review)", "/console/full-sync", True),
            ("setup check", "/console/setup-check", True)]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def fetch(client: httpx.Client, path: str) -> tuple[str, float, int, str]:
    """(status code, or the error's name; seconds; body bytes; the start of the body)."""
    started = time.perf_counter()
    try:
        response = client.get(path)
    except httpx.HTTPError as exc:
        return type(exc).__name__, time.perf_counter() - started, 0, str(exc)[:300]
    return str(response.status_code), time.perf_counter() - started, len(response.content), response.text[:300]


def measure(base: str, cookie: str, targets: list[tuple[str, str, bool]], requests: int, live_requests: int,
            warmup: int, page_seconds: float) -> dict[str, Any]:
    """Warm-up, then `requests` sequential GETs per page in rounds that alternate the pages and /healthz. A page
    that does not answer 200 is reported with what it answered (and left out after three failures)."""
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
    client.cookies.set("bcsync_console", cookie, domain="127.0.0.1", path="/console")
    results: dict[str, dict[str, Any]] = {}
    every = [("healthz", "/healthz", False), *targets]
    for name, path, live in every:
        codes: Counter[str] = Counter()
        size, first_ms, note = 0, float("nan"), ""
        for i in range(warmup):
            status, elapsed, size, text = fetch(client, path)
            first_ms = elapsed * 1000 if i == 0 else first_ms
            codes[status] += 1
            if status != "200":
                note = text
                break
        results[name] = {"path": path, "live": live, "status": dict(codes), "bytes": size, "first_ms": first_ms,
                         "times": [], "ok": set(codes) == {"200"}, "note": note, "failures": 0}
        print(f"warm {name:32} {dict(codes)} {size} bytes, first {first_ms:.0f} ms {note[:100]}", flush=True)
    rounds = max(1, requests // 50)

    def share(total: int, r: int) -> int:
        return total // rounds + (1 if r < total % rounds else 0)

    spent: dict[str, float] = defaultdict(float)
    for r in range(rounds):
        for name, path, live in every:
            figures = results[name]
            for _ in range(share(live_requests if live else requests, r)):
                if not figures["ok"] or spent[name] > page_seconds:
                    break
                status, elapsed, _size, text = fetch(client, path)
                spent[name] += elapsed
                figures["status"][status] = figures["status"].get(status, 0) + (status == "200")
                if status != "200":
                    figures["status"][status] = figures["status"].get(status, 0) + 1
                    figures["failures"] += 1
                    figures["note"] = f"{status} after {elapsed:.1f} s: {text[:200]}"
                    print(f"{name}: {figures['note']}", flush=True)
                    figures["ok"] = figures["failures"] < 3
                    continue
                figures["times"].append(elapsed * 1000)
        print(f"round {r + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)
    client.close()
    for figures in results.values():
        times = figures.pop("times")
        figures.update({"n": len(times), "p50": pct(times, 0.50), "p95": pct(times, 0.95),
                        "p99": pct(times, 0.99), "max": max(times) if times else float("nan")})
    base_p50 = results["healthz"]["p50"]
    for figures in results.values():
        figures["ratio"] = figures["p50"] / base_p50 if base_p50 and figures["n"] else float("nan")
    return results


# ---- profile of a page that misses the goal, in this process ---------------------------------------------------

@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("bench_in_request", default=False)


class SqlTimer:
    """Wall time of every statement of a measured request (the sync engine's cursor events; the async driver's
    wait is inside); the api's background tasks (relay, counters) run in contexts of their own and are left out."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = defaultdict(list)
        self.other: dict[str, list[float]] = defaultdict(list)
        self.on = False

    def before(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        started = conn.info["bench_started"].pop()
        if self.on:
            (self.spent if IN_REQUEST.get() else self.other)[" ".join(statement.split())].append(
                (time.perf_counter() - started) * 1000)


async def profile_pages(env: dict[str, str], cookie: str, targets: list[tuple[str, str]], requests: int
                        ) -> dict[str, Any]:
    from service.app import create_app
    from service.settings import Settings

    timer = SqlTimer()
    event.listen(Engine, "before_cursor_execute", timer.before)
    event.listen(Engine, "after_cursor_execute", timer.after)
    out: dict[str, Any] = {}
    try:
        with patched_env(env):
            settings = Settings(_env_file=None)
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                for _ in range(100):
                    if app.state.broker.ready:
                        break
                    await asyncio.sleep(0.1)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://bench.local") as client:
                    client.cookies.set("bcsync_console", cookie, domain="bench.local", path="/console")
                    for name, path in targets:
                        for _ in range(3):
                            await client.get(path)
                        timer.spent.clear()
                        timer.other.clear()
                        timer.on = True
                        token = IN_REQUEST.set(True)
                        profiler = cProfile.Profile()
                        walls = []
                        profiler.enable()
                        for _ in range(requests):
                            started = time.perf_counter()
                            response = await client.get(path)
                            walls.append((time.perf_counter() - started) * 1000)
                        profiler.disable()
                        timer.on = False
                        IN_REQUEST.reset(token)
                        statements = sorted(((sum(v) / requests, len(v) / requests, max(v), s)
                                             for s, v in timer.spent.items()), reverse=True)
                        stream = io.StringIO()
                        stats = pstats.Stats(profiler, stream=stream)
                        stats.sort_stats("cumulative").print_stats(r"(service|consumers|schemas)/", 25)
                        stats.sort_stats("tottime").print_stats(12)
                        own = sorted(((tt, f"{Path(file).name}:{line}({func})") for (file, line, func), (_, _, tt, _, _)
                                      in stats.stats.items() if "epoll" not in func),  # type: ignore[attr-defined]
                                     reverse=True)[:6]
                        out[name] = {"path": path, "status": response.status_code, "wall_ms": statistics.median(walls),
                                     "functions": [{"ms": round(tt * 1000 / requests, 1), "function": where}
                                                   for tt, where in own],
                                     "sql_ms": sum(s[0] for s in statements), "statements": [
                                         {"ms": round(ms, 2), "per_request": round(n, 2), "max_ms": round(mx, 2),
                                          "sql": sql[:400]} for ms, n, mx, sql in statements[:12]],
                                     "background_statements": sum(len(v) for v in timer.other.values()),
                                     "profile": stream.getvalue()}
                        print(f"profiled {name}: {out[name]['wall_ms']:.0f} ms a request under cProfile, "
                              f"{out[name]['sql_ms']:.0f} ms in SQL", flush=True)
    finally:
        event.remove(Engine, "before_cursor_execute", timer.before)
        event.remove(Engine, "after_cursor_execute", timer.after)
    return out


def profile_in_child(work: Path, env: dict[str, str], cookie: str, targets: list[tuple[str, str]],
                     requests: int) -> dict[str, Any]:
    """`profile_pages` in a process of its own (`--profile-spec`): the app's broker and threads go with it, and a
    profile that hangs (a broker that does not answer) is ended after 10 minutes."""
    spec = work / f"profile-{uuid.uuid4().hex[:6]}.json"
    spec.write_text(json.dumps({"env": env, "cookie": cookie, "targets": targets, "requests": requests}))
    answer = Path(f"{spec}.out")
    try:
        subprocess.run([sys.executable, "-m", "bench.console", "--profile-spec", str(spec)], timeout=600, check=False,
                       env=env)
        return dict(json.loads(answer.read_text())) if answer.exists() else {"error": "the profile left no answer"}
    except subprocess.TimeoutExpired:
        return {"error": "the profile did not finish in 10 minutes"}
    finally:
        spec.unlink(missing_ok=True)
        answer.unlink(missing_ok=True)


def profile_child(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    try:
        result = asyncio.run(profile_pages(spec["env"], spec["cookie"], [tuple(t) for t in spec["targets"]],
                                           spec["requests"]))
    except Exception as exc:  # the figures stand without it
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(f"{spec_path}.out").write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # whatever the app left behind (a broker reconnecting) does not keep this process


# ---- processes ------------------------------------------------------------------------------------------------

@dataclass
class Sandbox:
    work: Path
    bc: int = field(default_factory=free_port)
    dv: int = field(default_factory=free_port)
    entra: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca(self) -> str:
        return str(self.work / "sandbox-ca.pem")

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")}
        self.process = start([str(Path(sys.executable).parent / "bcsync"), "sandbox", "--bc-port", str(self.bc),
                              "--dataverse-port", str(self.dv), "--entra-port", str(self.entra), "--ca-file", self.ca],
                             env, self.work / "sandbox.log")
        for port in (self.bc, self.dv, self.entra):
            wait_port(port)
        # a population to read: the full sync review reads a page of each side per mapping
        httpx.post(f"http://127.0.0.1:{self.bc}/_sandbox/seed", timeout=120,
                   json={"customers": 10_000, "items": 10_000, "contactsPerCustomer": 0}).raise_for_status()
        httpx.post(f"http://127.0.0.1:{self.dv}/_sandbox/seed", timeout=120,
                   json={"accounts": 6000, "contacts_per_account": 0}).raise_for_status()

    def requests_per_load(self, base: str, cookie: str, targets: list[tuple[str, str, bool]]) -> dict[str, list[int]]:
        """[BC, Dataverse] requests one load of each page makes (from the sandbox's request logs)."""
        out: dict[str, list[int]] = {}
        bc_log, dv_log = f"http://127.0.0.1:{self.bc}/_sandbox/requests", f"http://127.0.0.1:{self.dv}/_sandbox/requests"
        with httpx.Client(base_url=base, timeout=60) as client:
            client.cookies.set("bcsync_console", cookie, domain="127.0.0.1", path="/console")
            for name, path, _ in targets:
                httpx.delete(bc_log, timeout=10)
                httpx.delete(dv_log, timeout=10)
                with contextlib.suppress(httpx.HTTPError):
                    client.get(path)
                time.sleep(0.3)  # a write's webhook may land after the answer
                out[name] = [int(httpx.get(bc_log, timeout=10).json()["count"]),
                             len(httpx.get(dv_log, timeout=10).json()["value"])]
        print(f"upstream requests per load [BC, Dataverse]: {out}", flush=True)
        return out

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def api_env(url: str, namespace: str, port: int, secret: str, sandbox: Sandbox) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")} | {
        "BCSYNC_DATABASE_URL": url, "BCSYNC_BROKER_URL": BROKER, "BCSYNC_NAMESPACE": namespace,
        "BCSYNC_TENANT_ID": DEMO_TENANT_ID, "BCSYNC_CLIENT_ID": DEMO_CLIENT_ID,
        "BCSYNC_CLIENT_SECRET": DEMO_CLIENT_SECRET,
        "BCSYNC_BC_COMPANY_ID": DEMO_COMPANY_ID, "BCSYNC_AUTHORITY_HOST": f"https://127.0.0.1:{sandbox.entra}",
        "BCSYNC_BC_URL": f"http://127.0.0.1:{sandbox.bc}/v2.0/{{tenant}}/production",
        "BCSYNC_DATAVERSE_URL": f"http://127.0.0.1:{sandbox.dv}", "BCSYNC_DATAVERSE_WEBHOOK_KEY": WEBHOOK_KEY,
        "BCSYNC_BC_CLIENT_STATE": CLIENT_STATE, "BCSYNC_ADMIN_TOKEN": ADMIN_TOKEN,
        "BCSYNC_CONSOLE_SESSION_SECRET": secret, "BCSYNC_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BCSYNC_HOST": "127.0.0.1", "BCSYNC_PORT": str(port), "BCSYNC_LOG_LEVEL": "WARNING",
        "BCSYNC_RECONCILE_MINUTES": "0", "BCSYNC_KEEPER_MINUTES": "0", "BCSYNC_WORKER_METRICS_PORT": "0",
        "REQUESTS_CA_BUNDLE": sandbox.ca, "SSL_CERT_FILE": sandbox.ca, "PYTHONPATH": str(ROOT),
    }


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> bool:
    """Whether the api became ready (database and RabbitMQ); False when it answers but stays unready (the shared
    RabbitMQ away: the pages are measured all the same, without the queue depths, and the report says so)."""
    deadline = time.monotonic() + seconds
    answers = False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the api exited ({process.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.get(f"{base}/readyz", timeout=5).status_code
            if status == 200:
                return True
            answers = True
        time.sleep(0.2)
    if not answers:
        raise RuntimeError(f"the api did not answer in {seconds:g} s: {log.read_text()[-2000:]}")
    print(f"the api is not ready after {seconds:g} s (RabbitMQ?): measuring without the broker", flush=True)
    return False


async def clean_namespace(namespace: str) -> None:
    """Delete the namespace's queues and exchanges (those that exist); say what could not be deleted."""
    topology = Topology(namespace)
    queues = [topology.mapping_queue(m.name) for m in MAPPINGS] + [topology.dead_queue] + topology.delay_queues
    exchanges = [topology.events_exchange, topology.retry_exchange, topology.dead_exchange,
                 jobs.control_exchange(namespace)]
    left: list[str] = []
    try:
        connection = await asyncio.wait_for(aio_pika.connect(BROKER), 20)
    except Exception as exc:
        print(f"RabbitMQ unreachable ({type(exc).__name__}): namespace {namespace} left behind", flush=True)
        return
    try:
        for name, delete in [*((q, "queue") for q in queues), *((e, "exchange") for e in exchanges)]:
            try:  # a failed delete (it does not exist) closes the channel: one channel each
                channel = await asyncio.wait_for(connection.channel(), 10)
                if delete == "queue":
                    await asyncio.wait_for(channel.queue_delete(name), 10)
                else:
                    await asyncio.wait_for(channel.exchange_delete(name), 10)
                await channel.close()
            except Exception as exc:
                if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
                    left.append(f"{name} ({type(exc).__name__})")
    finally:
        await connection.close()
    print(f"namespace {namespace} deleted" + (f"; left: {', '.join(left)}" if left else ""), flush=True)


async def one_database(kind: str, url: str, work: Path, sandbox: Sandbox, args: argparse.Namespace) -> dict[str, Any]:
    print(f"== {kind}: seeding", flush=True)
    seeded = await seed(url, args.couplings, args.errors, args.history)
    await analyze(url)
    print(f"seeded in {seeded.seconds:.0f} s: {seeded.couplings} couplings, {seeded.open_errors} open errors, "
          f"{seeded.history} history entries; record page {seeded.record}", flush=True)
    namespace = f"bench-console-{uuid.uuid4().hex[:8]}"
    port, secret = free_port(), secrets.token_urlsafe(32)
    env = api_env(url, namespace, port, secret, sandbox)
    base = f"http://127.0.0.1:{port}"
    log = work / f"api-{kind}.log"
    api = start([str(Path(sys.executable).parent / "bcsync"), "api"], env, log)
    cookie = signed_in(secret)
    targets = pages(seeded)
    out: dict[str, Any] = {"kind": kind, "seeded": vars(seeded), "load_start": os.getloadavg()}
    try:
        try:
            out["broker"] = wait_ready(base, api, log)
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            setup = httpx.post(f"{base}/admin/setup", headers=admin, timeout=120)
            # the keeper's pass stores what the subscriptions page shows (in an installation a worker runs it)
            keeper = httpx.post(f"{base}/admin/subscriptions/refresh", headers=admin, timeout=120)
            out["setup"], out["keeper"] = setup.status_code, keeper.status_code
            for what, answer in (("setup", setup), ("subscriptions refresh", keeper)):
                print(f"{what}: {answer.status_code} {answer.text[:300] if answer.status_code != 200 else ''}",
                      flush=True)
            out["upstream"] = sandbox.requests_per_load(base, cookie, targets)
            out["pages"] = measure(base, cookie, targets, args.requests, args.live_requests, args.warmup,
                                   args.page_seconds)
            out["load_end"] = os.getloadavg()
        finally:
            api.terminate()
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
        slow = [(name, figures["path"]) for name, figures in out["pages"].items()
                if name != "healthz" and figures["n"] and figures["p95"] > GOAL_MS]
        if slow and args.profile:
            print(f"== {kind}: profiling {', '.join(n for n, _ in slow)}", flush=True)
            out["profiles"] = profile_in_child(work, env, cookie, slow, args.profile_requests)
    finally:
        await clean_namespace(namespace)
    return out


# ---- report ---------------------------------------------------------------------------------------------------

def ms(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def status_text(figures: dict[str, Any]) -> str:
    """200, or every answer with its count (warm-up included) when some were not 200."""
    codes = figures["status"]
    return ", ".join(f"{code} x{n}" for code, n in sorted(codes.items())) if set(codes) != {"200"} else "200"


def table(runs: list[dict[str, Any]], live: bool) -> str:
    lines = ["| page | database | status | n | p50 | p95 | p99 | max | p50 ÷ healthz p50 | BC / Dataverse requests "
             "when it asks | goal p95 < 200 ms |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    names = [n for n, f in runs[0]["pages"].items() if f["live"] == live and n != "healthz"]
    if not live:
        names = ["healthz", *names]
    for name in names:
        for run in runs:
            f = run["pages"][name]
            label = "`GET /healthz` (baseline)" if name == "healthz" else f"{name} `{f['path']}`"
            verdict = "—" if name == "healthz" else ("not measured" if not f["n"] else
                                                     "**met**" if f["p95"] <= GOAL_MS else "**missed**")
            ratio = "1" if name == "healthz" else ("—" if math.isnan(f["ratio"]) else f"{f['ratio']:.0f}")
            upstream = run.get("upstream", {}).get(name)
            calls = f"{upstream[0]} / {upstream[1]}" if upstream else "—"
            lines.append(f"| {label} | {run['kind']} | {status_text(f)} | {f['n']} | {ms(f['p50'])} | "
                         f"{ms(f['p95'])} | {ms(f['p99'])} | {ms(f['max'])} | {ratio} | {calls} | {verdict} |")
    return "\n".join(lines)


def profile_text(runs: list[dict[str, Any]]) -> str:
    out = []
    for run in runs:
        for name, p in (run.get("profiles") or {}).items():
            if name == "error":
                out.append(f"- {run['kind']}: profiling failed: {p}")
                continue
            top = "; ".join(f"{s['ms']:.1f} ms in {s['per_request']:g} statement(s) a request: `{s['sql'][:160]}`"
                            for s in p["statements"][:3])
            functions = "; ".join(f"`{f['function']}` {f['ms']:.0f} ms" for f in p.get("functions", [])[:5])
            out.append(f"- {run['kind']}, {name}: {p['wall_ms']:.0f} ms a request in-process (under cProfile), of "
                       f"which {p['sql_ms']:.0f} ms in SQL. Costliest statements: {top}. Most time of its own, per "
                       f"request (cProfile): {functions}")
    return "\n".join(out)


def reading_text(runs: list[dict[str, Any]]) -> str:
    """What the profiles say about the pages that missed, where the cause is one this script knows to name."""
    out = []
    for run in runs:
        for name, p in (run.get("profiles") or {}).items():
            if name == "error":
                continue
            statements = p["statements"]
            recent = next((s for s in statements if "record_history.lag_ms FROM record_history" in s["sql"]), None)
            scan = next((s for s in statements if "record_history.search LIKE" in s["sql"]), None)
            per_hit = next((s for s in statements if s["per_request"] >= 20 and "record_history." in s["sql"][:40]),
                           None)
            if name == "overview" and recent:
                out.append(f"{run['kind']}: the overview reads the last hour's newest runs (up to `activity.ROWS`, "
                           f"50,000) on every load: {recent['ms']:.0f} ms in that statement, the rest of its "
                           f"{p['wall_ms']:.0f} ms (under cProfile) turning 50,000 rows into Python objects "
                           "(SQLAlchemy's fetch, `outbox.aware` per row) and bucketing them per minute "
                           "(`activity.last_hour`). It grows with the hour's runs, not with the couplings.")
            elif name.startswith("records search") and scan:
                text = (f"{run['kind']}: the search scans every history entry's `search` text with LIKE '%…%' (no "
                        f"index: {scan['ms']:.0f} ms)")
                if per_hit:
                    text += (f", then reads each hit's latest entries one query at a time ({per_hit['per_request']:g}"
                             f" statements, {per_hit['ms']:.0f} ms, plus loading them as ORM rows)")
                out.append(text + ".")
    return " ".join(out)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    first = runs[0]["seeded"]
    missed = [(run["kind"], n) for run in runs for n, f in run["pages"].items()
              if n != "healthz" and f["n"] and f["p95"] > GOAL_MS]
    absent = sorted({n for run in runs for n, f in run["pages"].items() if not f["n"]})
    loads = [round(v, 1) for run in runs for v in (run["load_start"][0], run.get("load_end", (0,))[0])]
    by_mapping = ", ".join(f"{m} {n:,}" for m, n in sorted(first["by_mapping"].items(), key=lambda kv: -kv[1]) if n)
    record = first["record"]
    body = f"""
`python -m bench.console --database {args.database} --requests {args.requests} --live-requests \
{args.live_requests}` (`make bench`). Machine:
{facts['machine']} (`{facts['cpu']}`); load average {facts['load'][0]:.2f} / {facts['load'][1]:.2f} /
{facts['load'][2]:.2f} (1/5/15 min) at the start, {min(loads):.1f} to {max(loads):.1f} during the runs (shared
with other sessions). Run at {facts['when']}.

**Store.** Fresh per database (SQLite file; PostgreSQL database created and dropped), schema by
`upgrade_async`, seeded in {', '.join(f"{r['seeded']['seconds']:.0f} s ({r['kind']})" for r in runs)}:
{first['couplings']:,} couplings ({by_mapping}); {first['open_errors']:,} open errors (two in three of
coupled records, the rest of records whose create failed; dependency, validation, throttling and conflict
messages, each with its event for a retry) and {first['resolved_errors']:,} resolved ones; {first['history']:,}
history entries built by `history.entry` over the last hour (with `lag_ms`; four in five on a hot fifth of
the records; {first['search_hits']:,} of them name "{SEARCH_WORD}"); {first['outbox']:,} published outbox
events; {first['jobs']:,} job-log rows (two days, hourly) and a finished full synchronization. Mapping configs
as `POST /admin/setup` leaves them (run against the sandbox). ANALYZE afterwards, as the prune job (SQLite) and
autovacuum (PostgreSQL) would have. The record page is the CUSTOMER pair with the most entries ({record[2]}).

**Method.** `bcsync api` (one uvicorn process) and `bcsync sandbox` (Business Central, Dataverse, Entra; seeded
with 10,000 customers, 10,000 items and 6,000 accounts) as processes; this script is the client (httpx,
one keep-alive connection, requests one after the other), signed in as an Operator by a session cookie signed
with the api's `BCSYNC_CONSOLE_SESSION_SECRET`. {args.warmup} warm-up requests per page, then {args.requests}
per page ({args.live_requests} for the pages that ask BC and Dataverse: each load spends their request budget,
see below) in rounds of about 50 that alternate all pages and `GET /healthz` of the same api (the baseline: the
ratio is comparable across noisy runs). Times are the client's, request sent to body read.

### Pages that read the store

{table(runs, live=False)}

### Pages that ask Business Central and Dataverse (here: the sandbox on this machine)

Full sync's review reads a page of each side per mapping and the setup check reads both systems' metadata. They
ask when nothing is kept from the last minute (per api process; for full sync also when the last run changed), or
when the user asks again (Count again / Check again); the other loads show what was kept, with its age. So the
figures below are mostly loads that reuse; one that asks takes those requests' time on top (real BC and Dataverse
answer in tens to hundreds of ms each, this sandbox on the same 2 cores in a few). (The subscriptions page shows
the keeper's stored state, its refresh is a POST: it is in the table above.)

{table(runs, live=True)}
"""
    live = {n: run["upstream"][n] for run in runs for n, f in run["pages"].items()
            if f["live"] and run.get("upstream", {}).get(n)}
    if live:
        body += ("\nA load that asks spends the integration's request budget: Dataverse allows 6,000 "
                 "requests per user in 5 minutes (the sandbox enforces it, and bcsync's own client budget is the "
                 "same by default), shared with the synchronization itself. "
                 + "; ".join(f"{n}: {bc} BC and {dv} Dataverse requests an ask"
                             + (f" ({6000 // dv} asks in 5 minutes would take the whole Dataverse budget)"
                                if dv else "")
                             for n, (bc, dv) in live.items())
                 + ". Before the pages kept their answers for a minute, every load asked: at 200 loads each the "
                   "run itself was throttled (429, Retry-After) and loads waited more than 30 s; they are still "
                   "measured with fewer requests.\n")
    failed = [(run["kind"], n, f) for run in runs for n, f in run["pages"].items() if f.get("failures")]
    if failed:
        body += "\nAnswers other than 200 during the measurement: " + "; ".join(
            f"{n} ({k}): {status_text(f)} — last: {f['note'][:160]}" for k, n, f in failed) + ".\n"
    without = [run["kind"] for run in runs if run.get("broker") is False]
    if without:
        body += (f"\n**RabbitMQ did not answer during the {', '.join(without)} run(s)** (the shared broker was away): "
                 "the overview there did not ask the queue depths (11 passive declares), so it did a little less "
                 "than it normally does.\n")
    if absent:
        body += (f"\nNot measured (the page answered other than 200 — not written yet when this ran): "
                 f"{', '.join(absent)}.\n")
    if missed:
        body += "\n**Goal missed:** " + ", ".join(f"{n} ({k})" for k, n in missed) + ".\n"
    else:
        body += "\n**Goal (p95 < 200 ms) met by every page measured.**\n"
    reading = reading_text(runs)
    if reading:
        body += f"\n**Reading.** {reading}\n"
    profiles = profile_text(runs)
    if profiles:
        body += ("\n**Profiles** (in-process, the same app on the same store, every SQL statement timed):\n\n"
                 f"{profiles}\n")
    return body


async def main(args: argparse.Namespace) -> None:
    facts = {"machine": machine(), "cpu": f"nproc {os.cpu_count()}",
        "load": os.getloadavg(), "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    print(f"machine: {facts}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    sandbox = Sandbox(work)
    runs: list[dict[str, Any]] = []
    try:
        sandbox.start()
        kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
        for kind in kinds:
            if kind == "sqlite":
                try:
                    runs.append(await one_database(kind, f"sqlite+aiosqlite:///{work / 'console.db'}", work, sandbox,
                                                   args))
                finally:
                    for path in work.glob("console.db*"):
                        path.unlink()
            else:
                async with fresh_postgres() as url:
                    runs.append(await one_database(kind, url, work, sandbox, args))
    finally:
        sandbox.stop()
    saved = {"args": vars(args), "facts": facts, "runs": runs}
    (args.json or work / "console.json").write_text(json.dumps(saved, indent=1, default=str))
    print(f"figures saved to {args.json or work / 'console.json'}; logs in {work}", flush=True)
    body = report(args, runs, facts)
    if args.write:
        write_section("Console page loads", body)
    print(body)
    for run in runs:
        for name, p in (run.get("profiles") or {}).items():
            if name != "error":
                print(f"---- profile {run['kind']} {name}\n" + "\n".join(
                    f"{s['ms']:8.2f} ms  x{s['per_request']:<6g} max {s['max_ms']:7.2f}  {s['sql'][:300]}"
                    for s in p["statements"]) + "\n" + p["profile"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--requests", type=int, default=200, help="requests per page after the warm-up")
    parser.add_argument("--live-requests", type=int, default=50,
                        help="requests per page that asks BC/Dataverse (an ask spends their request budget)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--page-seconds", type=float, default=180.0,
                        help="stop measuring a page after this much time in its requests (a very slow page)")
    parser.add_argument("--couplings", type=int, default=100_000)
    parser.add_argument("--errors", type=int, default=1_000)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="do not profile slow pages")
    parser.add_argument("--profile-requests", type=int, default=10)
    parser.add_argument("--no-write", dest="write", action="store_false", help="leave docs/benchmarks.md alone")
    parser.add_argument("--json", type=Path, help="where to save the figures (default: the run's temp dir)")
    parser.add_argument("--from-json", type=Path, help="write the section from a saved run instead of measuring")
    parser.add_argument("--profile-spec", type=Path, help=argparse.SUPPRESS)  # internal: profile_in_child
    args = parser.parse_args()
    if args.profile_spec:
        profile_child(args.profile_spec)
    elif args.from_json:
        saved = json.loads(args.from_json.read_text())
        saved_args = argparse.Namespace(**{**saved["args"], "json": None, "from_json": None})
        body = report(saved_args, saved["runs"], saved["facts"])
        if args.write:
            write_section("Console page loads", body)
        print(body)
    else:
        asyncio.run(main(args))
