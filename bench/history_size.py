"""Record history: store size per 100,000 changes, write rate, a pair's lookup and a search.

    python -m bench.history_size [--entries 100000] [--batch 500] [--queries 20] [--databases sqlite,postgres]
                                 [--json PATH]

Builds `--entries` history entries with `service.store.history.entry(...)` — the function the sync engine calls
at the end of every run — from a typical change mix, and writes them through the real store
(`service.store.db.Database`, schema by `service.store.migrate.upgrade_async`) in transactions of `--batch`
entries, on SQLite (a fresh file) and on PostgreSQL (a fresh database, dropped afterwards). The mix:

- 70 %: an update of a coupled customer/account (CUSTOMER, 3 of 4) or contact/person (CONTACT, 1 of 4) in one
  system written to the other: one field (3 of 4) or two fields changed, old → new (phone, e-mail, web site,
  name, city, mobile phone), result `modified`, decision `applied`, reason "changed in …";
- 20 %: a run that wrote nothing: our own write's echo (3 of 4) or a change of a field the mapping does not carry,
  no changes;
- 10 %: a create: a new record written to the other side with 12 fields (old None), decision `created`.

Each entry serves one event (a 32-hex event id, the source, the change type, a GUID correlation id, received and
occurred times), carries a run id, a duration, both ids of the pair (GUIDs), and the label and search terms the
engine gives it (`Rule.describe` + both ids, as consumers/outcome.py does): "10000 Adatum Corporation", the
number, the name, the e-mail, the phone. Pools: 4,000 customer pairs and 2,000 contact pairs, each coupled (a
`coupling` row, as in a live installation: a search joins them), so a pair has about 17 entries in 100,000.

Reported per database: bytes of the table with its indexes (SQLite: pages of the file after a checkpoint, before
and after VACUUM, and per object from `dbstat`; PostgreSQL: `pg_total_relation_size('record_history')`, its
heap, TOAST and indexes after ANALYZE), bytes per entry, MB per 100,000 changes, entries written per second,
and the median of `--queries` runs of: one pair's history (`history.for_pair`, the newest 50), a search for one
record's e-mail (a term found in one pair) and a search for a word in many names (`history.search`, 50 hits);
on SQLite once more after `ANALYZE` (without statistics SQLite's planner reads a pair's entries through the
`mapping` prefix of one index, i.e. every entry of the mapping).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import machine
from schemas.vocabulary import Decision, FieldChange, Result, Side
from service.store import history
from service.store.db import Database
from service.store.migrate import upgrade_async
from service.store.models import Coupling, RecordHistory
from tests.conftest import POSTGRES_ADMIN_URL

COMPANIES = ("Adatum Corporation", "Trey Research", "School of Fine Art", "Alpine Ski House", "Relecloud",
             "Coho Winery", "Fabrikam Inc.", "Contoso Pharmaceuticals", "Litware Inc.", "Northwind Traders",
             "Wide World Importers", "Tailspin Toys", "Woodgrove Bank", "Proseware Inc.", "Lamna Healthcare",
             "Humongous Insurance", "Blue Yonder Airlines", "Fourth Coffee", "Margie's Travel", "VanArsdel Ltd.")
SUFFIXES = ("", " GmbH", " Ltd", " Nord", " Süd", " West", " Holding", " & Partner", " Logistics", " Services")
FIRST = ("Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hannes", "Ida", "Jonas", "Katrin", "Lukas")
LAST = ("Meyer", "Schmidt", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann", "Koch", "Richter", "Klein")
CITIES = ("Atlanta", "Chicago", "Miami", "Seattle", "Boston", "Denver", "München", "Hamburg", "Köln", "Wien")
CUSTOMER_FIELDS = (  # (BC field, Dataverse field, how a value looks)
    ("phoneNumber", "telephone1", "phone"), ("email", "emailaddress1", "email"),
    ("website", "websiteurl", "web"), ("displayName", "name", "name"), ("city", "address1_city", "city"))
CONTACT_FIELDS = (("phoneNumber", "telephone1", "phone"), ("mobilePhoneNumber", "mobilephone", "phone"),
                  ("email", "emailaddress1", "email"), ("city", "address1_city", "city"))
CUSTOMER_CREATE = (  # 12 fields written by a create toward BC (a Sales account) or toward Sales (a BC customer)
    ("displayName", "name"), ("phoneNumber", "telephone1"), ("email", "emailaddress1"), ("website", "websiteurl"),
    ("addressLine1", "address1_line1"), ("addressLine2", "address1_line2"), ("city", "address1_city"),
    ("state", "address1_stateorprovince"), ("postalCode", "address1_postalcode"),
    ("country", "address1_country"), ("currencyCode", "transactioncurrencyid"), ("taxRegistrationNumber",
                                                                                   "accountnumber"))
TEXT_COLUMNS = ("events", "changes", "search", "reason", "label", "correlation_id", "bc_id", "dataverse_id")
START = datetime(2026, 11, 6, 8, 0, tzinfo=UTC)


@dataclass
class Pair:
    mapping: str
    bc_id: str
    dataverse_id: str
    number: str
    name: str
    email: str
    phone: str
    city: str
    web: str


def phone(rng: random.Random) -> str:
    return f"+1 {rng.randint(200, 999)} 555 {rng.randint(0, 9999):04d}"


def value(rng: random.Random, kind: str, pair: Pair) -> str:
    if kind == "phone":
        return phone(rng)
    if kind == "email":
        return f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}{rng.randint(1, 99)}@{pair.web}"
    if kind == "web":
        return f"https://www.{pair.web}/{rng.choice(('', 'de', 'en', 'shop'))}".rstrip("/")
    if kind == "city":
        return rng.choice(CITIES)
    return f"{rng.choice(COMPANIES)}{rng.choice(SUFFIXES)}"


def pairs(rng: random.Random, customers: int, contacts: int) -> list[Pair]:
    out = []
    for i in range(customers):
        name = f"{COMPANIES[i % len(COMPANIES)]}{SUFFIXES[(i // len(COMPANIES)) % len(SUFFIXES)]}"
        web = f"{name.split()[0].lower().strip('.,')}{i}.example.com"
        out.append(Pair("CUSTOMER", str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128))),
                        f"{10000 + 10 * i}", name, f"info@{web}", phone(rng), rng.choice(CITIES), web))
    for i in range(contacts):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        web = f"{COMPANIES[i % len(COMPANIES)].split()[0].lower().strip('.,')}{i}.example.com"
        out.append(Pair("CONTACT", str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128))),
                        f"CT{200000 + i}", name, f"{name.replace(' ', '.').lower()}@{web}", phone(rng),
                        rng.choice(CITIES), web))
    return out


def one_entry(rng: random.Random, pool: list[Pair], n: int) -> RecordHistory:
    """The n-th history entry of the mix (see the module's docstring)."""
    contact = rng.random() < 0.25
    candidates = pool[4000:] if contact else pool[:4000]
    pair = rng.choice(candidates)
    side = Side.BC if rng.random() < 0.5 else Side.DATAVERSE
    other = side.other
    roll = rng.random()
    received = START + timedelta(seconds=n * 26)  # 100,000 changes over a month
    event = {"event_id": uuid.UUID(int=rng.getrandbits(128)).hex, "source": side.source,
             "change_type": "created" if roll >= 0.9 else "updated", "correlation_id": str(uuid.UUID(
                 int=rng.getrandbits(128))), "received_at": received.isoformat(),
             "occurred_at": (received - timedelta(milliseconds=rng.randint(200, 3000))).isoformat()}
    changes: list[FieldChange] = []
    if roll < 0.7:  # an update of one or two fields
        fields = CONTACT_FIELDS if contact else CUSTOMER_FIELDS
        for bc_field, dv_field, kind in rng.sample(fields, 1 if rng.random() < 0.75 else 2):
            field = bc_field if other is Side.BC else dv_field
            old = {"phone": pair.phone, "email": pair.email, "web": f"https://www.{pair.web}", "city": pair.city,
                   "name": pair.name}[kind]
            new = value(rng, kind, pair)
            if kind == "phone":
                pair.phone = new
            elif kind == "email":
                pair.email = new
            elif kind == "city":
                pair.city = new
            changes.append(FieldChange(other, field, old, new))
        result, decision, reason = Result.MODIFIED, Decision.APPLIED, f"changed in {side.system}"
    elif roll < 0.9:  # nothing written
        if rng.random() < 0.75:
            result, decision = Result.UNCHANGED, Decision.ECHO
            reason = f"the record is as this integration wrote it to {side.system}: our own write's echo"
        else:
            result, decision = Result.UNCHANGED, Decision.UNCHANGED
            reason = "no field this mapping carries changed since the last synchronization"
    else:  # a create: 12 fields on the other side
        for bc_field, dv_field in CUSTOMER_CREATE:
            field = bc_field if other is Side.BC else dv_field
            made: Any = {"displayName": pair.name, "name": pair.name, "phoneNumber": pair.phone,
                        "telephone1": pair.phone, "email": pair.email, "emailaddress1": pair.email,
                        "city": pair.city, "address1_city": pair.city}.get(field)
            if made is None:
                made = (f"{rng.randint(1, 400)} {rng.choice(LAST)}straße" if "ine1" in field or "Line1" in field
                       else "" if "ine2" in field or "Line2" in field else f"{rng.randint(10000, 99999)}"
                       if "postal" in field.lower() else "US" if "country" in field.lower() else "USD"
                       if "currency" in field.lower() else f"https://www.{pair.web}" if "web" in field
                       else "GA" if "state" in field.lower() else f"US{rng.randint(10**8, 10**9 - 1)}")
            changes.append(FieldChange(other, field, None, made))
        result, decision, reason = Result.INSERTED, Decision.CREATED, f"new in {side.system}: created in {other.system}"
    label = f"{pair.number} {pair.name}"
    terms = [pair.number, pair.name, pair.email, pair.phone, pair.bc_id, pair.dataverse_id]
    row = history.entry(mapping=pair.mapping, side=side, record_id=pair.bc_id if side is Side.BC else pair.dataverse_id,
                        bc_id=pair.bc_id, dataverse_id=pair.dataverse_id, kind="live", result=result,
                        decision=decision, reason=reason, events=[event], changes=changes, sensitive=(),
                        correlation_id=uuid.uuid4().hex, duration_ms=rng.randint(40, 900), label=label, terms=terms)
    row.at = received + timedelta(milliseconds=rng.randint(50, 1500))
    return row


async def size_of(db: Database, path: Path | None) -> dict[str, Any]:
    async with db.engine.connect() as connection:
        if db.dialect == "sqlite":
            await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            page = (await connection.exec_driver_sql("PRAGMA page_size")).scalar_one()
            pages = (await connection.exec_driver_sql("PRAGMA page_count")).scalar_one()
            objects: dict[str, int] = {}
            try:
                stats: Any = await connection.exec_driver_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
                for name, size in stats.all():
                    objects[str(name)] = int(size)
            except Exception:  # sqlite built without dbstat
                pass
            table = sum(v for k, v in objects.items() if k == "record_history" or k.startswith("ix_record_history"))
            return {"bytes": int(page) * int(pages), "file": path.stat().st_size if path else None,
                    "history_bytes": table or None, "objects": {k: v for k, v in objects.items()
                                                                 if "record_history" in k}}
        await connection.exec_driver_sql("ANALYZE record_history")
        sizes: Any = (await connection.execute(text(
            "SELECT pg_total_relation_size('record_history'), pg_relation_size('record_history'), "
            "pg_indexes_size('record_history'), pg_table_size('record_history') - pg_relation_size('record_history'),"
            " pg_database_size(current_database())"))).one()
        return {"bytes": int(sizes[4]), "history_bytes": int(sizes[0]), "heap": int(sizes[1]),
                "indexes": int(sizes[2]), "toast_etc": int(sizes[3])}


async def timed(call: Any, runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


async def measure(url: str, label: str, args: argparse.Namespace, path: Path | None) -> dict[str, Any]:
    rng = random.Random(14)
    pool = pairs(rng, 4000, 2000)
    await upgrade_async(url)
    db = Database(url)
    try:
        async with db.session() as session:
            now = datetime.now(UTC)
            session.add_all([Coupling(mapping=p.mapping, bc_id=p.bc_id, dataverse_id=p.dataverse_id,
                                      created_at=now, updated_at=now, last_result="modified") for p in pool])
        before = await size_of(db, path)
        build = write = 0.0
        mix: dict[str, int] = {}
        chars: dict[str, int] = dict.fromkeys(TEXT_COLUMNS, 0)
        changes_total = 0
        written = 0
        while written < args.entries:
            count = min(args.batch, args.entries - written)
            started = time.process_time()
            rows = [one_entry(rng, pool, written + i) for i in range(count)]
            build += time.process_time() - started
            for row in rows:
                mix[row.decision] = mix.get(row.decision, 0) + 1
                changes_total += row.changes.count('"field"')
                for column in TEXT_COLUMNS:
                    chars[column] += len((getattr(row, column) or "").encode())
            started = time.perf_counter()
            async with db.session() as session:
                session.add_all(rows)
            write += time.perf_counter() - started
            written += count
        after = await size_of(db, path)
        vacuumed = None
        if db.dialect == "sqlite":
            async with db.engine.connect() as connection:
                await connection.exec_driver_sql("VACUUM")
            vacuumed = await size_of(db, path)
        # queries: a pair with a typical number of entries, one record's e-mail, a word in many names
        pair = pool[17]
        async with db.session() as session:
            count_pair = (await session.execute(text(
                "SELECT count(*) FROM record_history WHERE mapping = :m AND (bc_id = :b OR dataverse_id = :d)"),
                {"m": pair.mapping, "b": pair.bc_id, "d": pair.dataverse_id})).scalar_one()

        async def lookup() -> int:
            async with db.session() as session:
                return len(await history.for_pair(session, pair.mapping, [pair.dataverse_id], limit=50,
                                                  before_id=None))

        email = pool[4321].email  # a contact's e-mail as it is now (the latest entries carry it)

        async def search_rare() -> int:
            async with db.session() as session:
                return len(await history.search(session, email, limit=50))

        async def search_common() -> int:
            async with db.session() as session:
                return len(await history.search(session, "winery", limit=50))

        lookup_ms, lookup_n = await timed(lookup, args.queries)
        rare_ms, rare_n = await timed(search_rare, args.queries)
        common_ms, common_n = await timed(search_common, args.queries)
        analyzed: dict[str, float] = {}
        if db.dialect == "sqlite":  # the same queries once the planner has statistics (nothing runs ANALYZE today)
            async with db.engine.connect() as connection:
                await connection.exec_driver_sql("ANALYZE")
            analyzed = {"lookup_ms": (await timed(lookup, args.queries))[0],
                        "search_rare_ms": (await timed(search_rare, args.queries))[0],
                        "search_common_ms": (await timed(search_common, args.queries))[0]}
        grown = after["history_bytes"] if after.get("history_bytes") else after["bytes"] - before["bytes"]
        result = {
            "database": label, "entries": args.entries, "batch": args.batch, "mix": mix,
            "field_changes": changes_total,
            "text_bytes_per_entry": {k: round(v / args.entries) for k, v in chars.items()},
            "before": before, "after": after, "vacuumed": vacuumed,
            "growth_bytes": after["bytes"] - before["bytes"],
            "vacuumed_growth_bytes": (vacuumed["bytes"] - before["bytes"]) if vacuumed else None,
            "history_bytes": grown, "bytes_per_entry": grown / args.entries,
            "mb_per_100k": grown / args.entries * 100_000 / 1e6,
            "build_us_per_entry": build / args.entries * 1e6, "write_per_s": args.entries / write,
            "write_us_per_entry": write / args.entries * 1e6,
            "lookup_ms": lookup_ms, "lookup_rows": lookup_n, "pair_entries": count_pair,
            "search_rare_ms": rare_ms, "search_rare_hits": rare_n, "search_common_ms": common_ms,
            "search_common_hits": common_n, "after_analyze": analyzed}
        print(json.dumps(result, indent=1, default=str), flush=True)
        return result
    finally:
        await db.close()


async def main(args: argparse.Namespace) -> None:
    results = []
    for database in args.databases.split(","):
        if database == "sqlite":
            work = Path(tempfile.mkdtemp(prefix="bench-history-"))
            path = work / "bcsync.db"
            try:
                results.append(await measure(f"sqlite+aiosqlite:///{path}", "SQLite", args, path))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            name = f"bench_history_{uuid.uuid4().hex[:8]}"
            admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
            async with admin.connect() as connection:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            try:
                results.append(await measure(f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}", "PostgreSQL", args,
                                             None))
            finally:
                async with admin.connect() as connection:
                    await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.dispose()
    print(f"\nMachine: {machine()}; {args.entries} entries in transactions of {args.batch}; medians of "
          f"{args.queries} queries\n")
    print("| database | bytes per entry | MB per 100,000 changes | entries written/s | "
          "one pair's history (ms) | search: one e-mail (ms) | search: a word in many names (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['database']} | {r['bytes_per_entry']:.0f} | {r['mb_per_100k']:.1f} | {r['write_per_s']:.0f} | "
              f"{r['lookup_ms']:.1f} | {r['search_rare_ms']:.1f} | {r['search_common_ms']:.1f} |")
        if r["after_analyze"]:
            a = r["after_analyze"]
            print(f"| {r['database']} after ANALYZE | | | | {a['lookup_ms']:.1f} | {a['search_rare_ms']:.1f} | "
                  f"{a['search_common_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results},
                                              indent=1, default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--json", help="also write the figures to this file")
    asyncio.run(main(parser.parse_args()))
