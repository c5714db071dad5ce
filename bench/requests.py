"""Requests per change: the BC and Dataverse requests the service spends on one change of each kind, and the
sustained changes/s at the real default request budget, A/B between a baseline release and the working tree.

    python -m bench.requests [--base 7223124] [--master 50] [--documents 15] [--lines 3]
                             [--backlog auto|N] [--budget-scale 1] [--variants before,after] [--no-budget]
    python -m bench.requests --from-json <results.json>      # re-render docs/benchmarks.md from a saved run

The baseline is checked out as a git worktree (`git worktree add <tmp> <base>`, removed at the end); its api and
worker run from there (PYTHONPATH, same venv), the working tree's from here. Both variants use this tree's
sandbox (the instrument: the same request logs and limits), each on a fresh PostgreSQL database and its own
RabbitMQ namespace, one variant after the other (one stack at a time).

1. Requests per change by kind. A warm-up creates and couples the records; then, per kind, `--master` (or
   `--documents`) changes by humans through the sandbox's user endpoints (not in the request logs), at
   `--rate` per second; the bench waits until every change is at the destination and then until no request of
   the service arrived for `--quiet` s (echoes and BC's company-contact notifications included). The requests
   counted are the service's: every BC API request (humans and the bench use the control endpoints) and the
   Dataverse requests of the application user, without BC's contact poll (a read per poll interval, not per
   change: shown apart) and webhook registration.
2. Sustained changes/s at the real budget: BCSYNC_BC_REQUEST_BUDGET = BCSYNC_DATAVERSE_REQUEST_BUDGET = 6000
   per 300 s (the defaults) and the sandbox's limits alike, 50 ms added latency on every API request, one worker,
   a backlog of account (Sales) and customer (BC) updates on distinct coupled records queued before it starts.
   Both budgets are sliding windows spent greedily: a burst until 6,000 requests are used, then a wait until
   they leave the window. The sustained rate is the changes written in the 300 s that follow the moment the
   busier system's 6,000th request was made (that window again holds 6,000 requests), over 300 s.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import re
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from bench.common import ROOT, machine, queue_depths, write_section
from bench.sync import UNLIMITED, epoch, fresh_database, load
from schemas.mappings import MAPPINGS
from service.topology import Topology
from tests.conftest import BROKER_URL
from tests.e2e.stack import Process, Stack

Json = dict[str, Any]
SECTION = "Requests per change"
BASE_COMMIT = "7223124"
DEFAULT_UNIT_ID = "4f3e2d1c-0b9a-4f8e-9d7c-6b5a4f3e2d1c"  # the sandbox org's "Primary Unit"
REAL_BUDGET, REAL_WINDOW = 6000, 300.0
LATENCY_MS = 50
# Counting runs with the budgets lifted (a budget changes when requests are made, not how many) and no
# subscription keeper (its pass would re-register webhooks mid-batch).
COUNT_ENV = {"BCSYNC_BC_REQUEST_BUDGET": str(UNLIMITED), "BCSYNC_DATAVERSE_REQUEST_BUDGET": str(UNLIMITED),
             "BCSYNC_KEEPER_MINUTES": "0"}
REGISTRATION = ("/subscriptions", "/serviceendpoints", "/sdkmessage")
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
QUOTED = re.compile(r"'(?:[^']|'')*'")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z?")
NUMBER = re.compile(r"(?<![\w{])\d+(\.\d+)?(?![\w}])")
MASTER_KINDS = ("account", "customer", "contact_dv", "contact_bc", "item")
BUDGET_HEAD = ("| variant | written / backlog | run | budget spent after | sustained changes/s | overall changes/s "
               "| BC / Dataverse requests per change | most requests in any window BC / Dataverse "
               "| 429 answers BC / Dataverse | load (1 min) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
KIND_LABELS = {
    "account": "account update in Sales → BC customer",
    "customer": "customer update in BC → Sales account",
    "contact_dv": "contact update in Sales → BC contact",
    "contact_bc": "person contact update in BC → Sales contact",
    "item": "item update in BC → Sales product",
    "order": "Sales order submitted → BC order with lines",
    "invoice": "BC order posted → Sales invoice, order invoiced",
}


# ---- the two variants ------------------------------------------------------------------------------------------

@dataclass
class Variant:
    name: str  # before | after
    code: Path  # where the api and worker run from
    describe: str


class VariantStack(Stack):
    """tests/e2e/stack.py's Stack whose api and workers run from `code` (PYTHONPATH), the sandbox from this tree."""

    def __init__(self, directory: Path, code: Path, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.code = code

    def _process(self, role: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        where = ROOT if role == "sandbox" else self.code
        return super()._process(role, args, {"PYTHONPATH": str(where), **(env or {})})


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


# ---- the request logs -------------------------------------------------------------------------------------------

def bc_entry(entry: Json) -> tuple[str, str, str, int, float]:
    """(method, path, query, status, epoch) of a BC request log entry."""
    parts = urlsplit(entry["path"])
    return entry["method"], parts.path, parts.query, int(entry["status"]), epoch(entry["time"])


def dv_entry(entry: Json) -> tuple[str, str, str, int, float]:
    return entry["method"], entry["path"], entry.get("query") or "", int(entry["status"]), epoch(entry["at"])


def is_poll(method: str, path: str, query: str) -> bool:
    """BC's poll of sides it cannot notify (contacts, salespeople): a read of a whole entity set by modified
    time, or of its ids only (the poll's delete check)."""
    if method != "GET" or path.endswith(")"):
        return False
    q = unquote(query)
    return "lastModifiedDateTime" in q or ("$select=id" in q and "$filter" not in q)


def shape(method: str, path: str, query: str) -> str:
    """The request with its ids, values and times replaced: `GET …/customers({id})?$filter=number eq '…'`."""
    path = GUID.sub("{id}", unquote(path))
    path = re.sub(r"^/v2\.0/\{id\}/\w+/api/", "", path)
    path = re.sub(r"^/api/data/v9\.2/", "", path)
    path = path.replace("v2.0/companies({id})/", "")
    path = QUOTED.sub("'…'", path)
    params = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ("tag",):
            continue
        value = GUID.sub("{id}", value)
        value = QUOTED.sub("'…'", STAMP.sub("{time}", value))
        value = NUMBER.sub("n", value)
        if key in ("$select", "$skiptoken"):
            value = "…"
        params.append(f"{key}={value}")
    return f"{method} {path}" + (f"?{'&'.join(params)}" if params else "")


class Logs:
    """Reads the service's requests from both sandboxes' request logs by position (`total`)."""

    def __init__(self, stack: Stack, app_user: str) -> None:
        self.stack, self.app_user = stack, app_user.lower()
        self.seen = {"bc": 0, "dv": 0}

    async def _read(self, system: str, limit: int) -> tuple[int, list[Json]]:
        port = self.stack.bc_port if system == "bc" else self.stack.dv_port
        answer = (await self.stack.http.get(f"http://127.0.0.1:{port}/_sandbox/requests",
                                            params={"limit": limit}, timeout=60)).json()
        return int(answer.get("total", len(answer["value"]))), list(answer["value"])

    async def mark(self) -> dict[str, int]:
        return {s: (await self._read(s, 0))[0] for s in ("bc", "dv")}

    async def since(self, mark: dict[str, int], limit: int = 50_000) -> dict[str, list[tuple[str, str, str, int,
                                                                                                float]]]:
        """Every request of the service logged after `mark`, per system, as (method, path, query, status, t)."""
        out = {}
        for system in ("bc", "dv"):
            total, rows = await self._read(system, limit)
            new = total - mark[system]
            if new > len(rows):
                print(f"warning: {system} request log lost {new - len(rows)} entries (cap)", flush=True)
            rows = rows[len(rows) - new:] if 0 < new <= len(rows) else (rows if new > 0 else [])
            out[system] = self.own(system, rows)
        return out

    def own(self, system: str, rows: list[Json]) -> list[tuple[str, str, str, int, float]]:
        if system == "bc":
            entries = [bc_entry(r) for r in rows]
        else:
            entries = [dv_entry(r) for r in rows if str(r.get("user_id") or "").lower() == self.app_user]
        return [e for e in entries if not any(p in e[1] for p in REGISTRATION)]

    async def new(self) -> dict[str, list[tuple[str, str, str, int, float]]]:
        """The service's requests logged since the last call (for watching a run)."""
        out = {}
        for system in ("bc", "dv"):
            total, rows = await self._read(system, 2000)
            fresh = total - self.seen[system]
            self.seen[system] = total
            rows = rows[len(rows) - fresh:] if 0 < fresh <= len(rows) else (rows if fresh > 0 else [])
            out[system] = self.own(system, rows)
        return out


async def quiet(stack: Stack, logs: Logs, seconds: float, timeout: float = 180.0) -> None:
    """Wait until the service made no request (other than BC's poll) for `seconds` and no event waits in a
    mapping or retry queue."""
    topology = Topology(stack.namespace)
    queues = [topology.mapping_queue(m.name) for m in MAPPINGS] + topology.delay_queues
    await logs.new()
    deadline, since = time.monotonic() + timeout, time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        fresh = await logs.new()
        if any(not is_poll(*e[:3]) for s in fresh.values() for e in s):
            since = time.monotonic()
        elif time.monotonic() - since >= seconds:
            depths = await queue_depths(BROKER_URL, queues)
            if not any(d > 0 for d in depths.values()):
                return
            since = time.monotonic()
    print(f"warning: not quiet within {timeout:.0f} s", flush=True)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not done within {timeout:.0f} s")
        await asyncio.sleep(interval)


# ---- the records ------------------------------------------------------------------------------------------------

@dataclass
class Records:
    """The coupled records the changes are made on: (source id, destination id) per kind."""
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    customer_numbers: dict[str, str] = field(default_factory=dict)  # BC customer id → its company contact's number
    account: str = ""  # the account of the orders
    products: list[Json] = field(default_factory=list)
    orders: list[tuple[str, str]] = field(default_factory=list)  # (Sales order id, BC order id) submitted


async def bc_all(stack: Stack, entity_set: str, prefix: str, field_: str = "displayName") -> list[Json]:
    return await stack.bc.query(entity_set, filter=f"startswith({field_},'{prefix}')", top=1_000_000)


async def dv_all(stack: Stack, entity_set: str, filter_: str, select: str) -> list[Json]:
    """The rows of one page (the Web API gives 5,000 at most: callers keep each query below that)."""
    return await stack.dv.query(entity_set, filter=filter_, select=select)


async def dv_pool(stack: Stack, name_prefix: str, count: int, select: str) -> list[Json]:
    """The accounts named `<name_prefix><i:05d>` for i < count: one query per thousand names (a page holds 5,000
    at most, and a pool can be larger)."""
    rows: list[Json] = []
    for thousand in range(count // 1000 + 1):
        rows += await dv_all(stack, "accounts", f"startswith(name,'{name_prefix}{thousand:02d}')", select)
    return rows


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], width: int = 8) -> list[Any]:
    sem = asyncio.Semaphore(width)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def couple_accounts(stack: Stack, prefix: str, count: int, timeout: float) -> tuple[list[tuple[str, str]],
                                                                                         list[tuple[str, str]]]:
    """`count` accounts created in Sales (`<prefix>A<i>`) and `count` customers in BC (`<prefix>C<i>`), all
    coupled; ([(account, customer)], [(customer, account)])."""
    calls: list[Callable[[], Awaitable[Any]]] = []
    for i in range(count):
        calls.append(partial(stack.dv.create, "accounts", {"name": f"{prefix}A{i:05d}", "customertypecode": 3}))
        calls.append(partial(stack.bc.create, "customers", {"displayName": f"{prefix}C{i:05d}"}))
    await gather_limited(calls)
    result: list[list[tuple[str, str]]] = [[], []]

    async def coupled() -> bool:
        bc = {c["displayName"]: c["id"] for c in await bc_all(stack, "customers", prefix)}
        dv = {a["name"]: a["accountid"] for pool in "AC"
              for a in await dv_pool(stack, f"{prefix}{pool}", count, "name,accountid")}
        if len(bc) < 2 * count or len(dv) < 2 * count:
            return False
        result[0] = [(dv[f"{prefix}A{i:05d}"], bc[f"{prefix}A{i:05d}"]) for i in range(count)]
        result[1] = [(bc[f"{prefix}C{i:05d}"], dv[f"{prefix}C{i:05d}"]) for i in range(count)]
        return True

    await until(coupled, timeout, f"{2 * count} accounts/customers coupled", interval=2.0)
    return result[0], result[1]


async def warm_up(stack: Stack, master: int, documents: int, lines: int) -> Records:
    """Salesperson, unit, `master` records per master-data kind and `lines` products, all coupled."""
    records = Records()
    await stack.dv.create("accounts", {"name": "Req owner", "customertypecode": 3})  # salesperson first
    await until(lambda: _exists(stack.bc.query("customers", filter="displayName eq 'Req owner'")), 60, "first customer")
    await stack.bc.create("unitsOfMeasure", {"code": "PCS", "displayName": "Piece"})
    items = await gather_limited([partial(stack.bc.create, "items", {
        "displayName": f"Req item {i:05d}", "unitPrice": 10 + i, "baseUnitOfMeasureCode": "PCS"})
        for i in range(max(master, lines))])
    records.pairs["account"], records.pairs["customer"] = await couple_accounts(stack, "Req ", master, 300)

    async def products() -> bool:
        rows = await dv_all(stack, "products", "startswith(name,'Req item')", "productid,productnumber,price,name")
        by_number = {r["productnumber"]: r for r in rows}
        if not all(i["number"] in by_number for i in items):
            return False
        records.pairs["item"] = [(i["id"], by_number[i["number"]]["productid"]) for i in items][:master]
        records.products = [by_number[i["number"]] for i in items[:lines]]
        return True

    await until(products, 300, "products coupled", interval=2.0)
    companies = await gather_limited([partial(stack.bc.customer_contacts, cid)
                                      for cid, _ in records.pairs["customer"]])
    records.customer_numbers = {cid: answer["company"]["number"]
                                for (cid, _), answer in zip(records.pairs["customer"], companies, strict=True)}
    # contacts: one under each account of the Sales pool (made in Sales), one under each customer of the BC pool
    calls: list[Callable[[], Awaitable[Any]]] = []
    for i, (account, _) in enumerate(records.pairs["account"]):
        calls.append(partial(stack.dv.create, "contacts", {
            "firstname": "Dana", "lastname": f"Req{i:05d}", "emailaddress1": f"req.dv{i:05d}@contact.example",
            "parentcustomerid_account@odata.bind": f"/accounts({account})"}))
    for i, (customer, _) in enumerate(records.pairs["customer"]):
        calls.append(partial(stack.bc.create, "contacts", {
            "type": "Person", "displayName": f"Bert Req{i:05d}", "email": f"req.bc{i:05d}@contact.example",
            "companyNumber": records.customer_numbers[customer]}))
    await gather_limited(calls)

    async def contacts() -> bool:
        bc = {str(c.get("email")): c["id"] for c in await bc_all(stack, "contacts", "req.", "email")}
        dv = {str(c.get("emailaddress1")): c["contactid"] for c in await dv_all(
            stack, "contacts", "startswith(emailaddress1,'req.')", "contactid,emailaddress1")}
        dv_keys = [f"req.dv{i:05d}@contact.example" for i in range(master)]
        bc_keys = [f"req.bc{i:05d}@contact.example" for i in range(master)]
        if not all(k in bc and k in dv for k in dv_keys + bc_keys):
            return False
        records.pairs["contact_dv"] = [(dv[k], bc[k]) for k in dv_keys]
        records.pairs["contact_bc"] = [(bc[k], dv[k]) for k in bc_keys]
        return True

    await until(contacts, 300, "contacts coupled", interval=2.0)
    records.account = records.pairs["account"][0][0]
    del documents
    return records


async def _exists(rows: Awaitable[list[Json]]) -> bool:
    return bool(await rows)


# ---- one batch of changes of a kind -----------------------------------------------------------------------------

class Batch:
    """N changes of one kind: `make(i, token)` is the human's write, `landed(tokens)` how many arrived."""

    def __init__(self, stack: Stack, records: Records, kind: str, count: int, seq: int, lines: int) -> None:
        self.stack, self.records, self.kind, self.count, self.lines = stack, records, kind, count, lines
        self.tokens = [f"rq{seq + i:07d}" for i in range(count)]
        self.bc_orders: dict[str, str] = {}

    async def make(self, i: int) -> None:
        s, r, token = self.stack, self.records, self.tokens[i]
        number = int(token[2:])
        if self.kind == "account":
            await s.dv.update("accounts", r.pairs["account"][i][0], {"emailaddress1": f"{token}@req.example"})
        elif self.kind == "customer":
            await s.bc.patch("customers", r.pairs["customer"][i][0], {"email": f"{token}@req.example"})
        elif self.kind == "contact_dv":
            await s.dv.update("contacts", r.pairs["contact_dv"][i][0], {"telephone1": f"+1 555 {number:07d}"})
        elif self.kind == "contact_bc":
            await s.bc.patch("contacts", r.pairs["contact_bc"][i][0], {"phoneNumber": f"+1 555 {number:07d}"})
        elif self.kind == "item":
            await s.bc.patch("items", r.pairs["item"][i][0], {"unitPrice": self.price(number)})
        elif self.kind == "order":
            order = await s.dv.create("salesorders", {"name": f"REQ-{token}",
                                                      "customerid_account@odata.bind": f"/accounts({r.account})"})
            for line, product in enumerate(r.products[: self.lines], 1):
                await s.dv.create("salesorderdetails", {
                    "salesorderid@odata.bind": f"/salesorders({order})", "lineitemnumber": line, "quantity": line,
                    "productid@odata.bind": f"/products({product['productid']})", "priceperunit": product["price"],
                    "uomid@odata.bind": f"/uoms({DEFAULT_UNIT_ID})"})
            await s.dv.submit_order(order)
            r.orders.append((order, ""))
        elif self.kind == "invoice":
            bc_order = r.orders[i][1]
            await s.bc.post_order(bc_order)

    @staticmethod
    def price(number: int) -> float:
        return 100 + (number % 10000) / 100

    async def landed(self) -> int:
        s, r = self.stack, self.records
        if self.kind in ("account", "customer", "contact_dv", "contact_bc", "item"):
            return self.matching(await self.destination_values())
        if self.kind == "order":
            orders = {o["externalDocumentNumber"]: o["id"] for o in await bc_all(
                s, "salesOrders", "REQ-", "externalDocumentNumber")}
            done = 0
            for token in self.tokens:
                bc_id = orders.get(f"REQ-{token}")
                if bc_id is not None and token not in self.bc_orders:
                    lines = await s.bc.query("salesOrderLines", f"documentId eq {bc_id}")
                    if len(lines) >= self.lines:
                        self.bc_orders[token] = bc_id
                done += token in self.bc_orders
            return done
        if self.kind == "invoice":
            done = 0
            for sales_order, _ in r.orders[: self.count]:
                row = await s.dv.get("salesorders", sales_order, select="statecode,statuscode")
                if (row["statecode"], row["statuscode"]) != (4, 100003):
                    continue
                if await dv_all(s, "invoices", f"_salesorderid_value eq {sales_order}", "invoiceid"):
                    done += 1
            return done
        raise ValueError(self.kind)

    async def destination_values(self) -> dict[str, Any]:
        """The changed field of every record on the destination side of this kind, by id."""
        s = self.stack
        if self.kind == "account":
            return {c["id"]: c.get("email") for c in await bc_all(s, "customers", "Req A")}
        if self.kind == "customer":
            return {a["accountid"]: a.get("emailaddress1") for a in await dv_all(
                s, "accounts", "startswith(name,'Req C')", "accountid,emailaddress1")}
        if self.kind == "contact_dv":
            return {c["id"]: c.get("phoneNumber") for c in await bc_all(s, "contacts", "req.", "email")}
        if self.kind == "contact_bc":
            return {c["contactid"]: c.get("telephone1") for c in await dv_all(
                s, "contacts", "startswith(emailaddress1,'req.')", "contactid,telephone1")}
        return {p["productid"]: p.get("price") for p in await dv_all(
            s, "products", "startswith(name,'Req item')", "productid,price")}

    def matching(self, values: dict[str, Any]) -> int:
        """How many of the batch's changes show at the destination."""
        done = 0
        for (_, dest), token in zip(self.records.pairs[self.kind], self.tokens, strict=False):
            value = values.get(dest)
            if self.kind in ("account", "customer"):
                done += value == f"{token}@req.example"
            elif self.kind in ("contact_dv", "contact_bc"):
                done += value == f"+1 555 {token[2:]}"
            else:
                done += abs(float(value or 0) - self.price(int(token[2:]))) < 0.005
        return done

    def order_ids(self) -> None:
        """After an order batch: pair each Sales order with its BC order (for the invoice batch)."""
        by_name = {f"REQ-{t}": self.bc_orders.get(t, "") for t in self.tokens}
        self.records.orders = [(o, by_name.get(name, "")) for (o, _), name in
                               zip(self.records.orders[-self.count:], by_name, strict=True)]


async def measure_kind(stack: Stack, logs: Logs, records: Records, kind: str, count: int, seq: int,
                       args: argparse.Namespace) -> Json:
    batch = Batch(stack, records, kind, count, seq, args.lines)
    if kind == "order":
        records.orders = []
    mark = await logs.mark()
    started = time.monotonic()
    for i in range(count):  # a fixed schedule, the changes one after the other
        await asyncio.sleep(max(0.0, started + i / args.rate - time.monotonic()))
        await batch.make(i)
    sent = time.monotonic() - started
    await until(lambda: _landed_all(batch), 300, f"{count} {kind} changes at the destination", interval=1.0)
    landed = time.monotonic() - started
    if kind == "order":
        batch.order_ids()
    await quiet(stack, logs, args.quiet)
    entries = await logs.since(mark)
    polls = {s: sum(is_poll(*e[:3]) for e in entries[s]) for s in entries}
    counted = {s: [e for e in entries[s] if not is_poll(*e[:3])] for s in entries}
    shapes = {s: Counter(shape(*e[:3]) for e in counted[s]) for s in counted}
    result = {"kind": kind, "changes": count, "bc": len(counted["bc"]), "dv": len(counted["dv"]),
              "bc_per_change": len(counted["bc"]) / count, "dv_per_change": len(counted["dv"]) / count,
              "polls": polls, "errors": {s: sum(e[3] >= 400 for e in counted[s]) for s in counted},
              "throttled": {s: sum(e[3] == 429 for e in counted[s]) for s in counted},
              "sent_seconds": sent, "landed_seconds": landed,
              "shapes": {s: dict(shapes[s].most_common()) for s in shapes},
              "failed": {s: dict(Counter(f"{shape(*e[:3])} → {e[3]}" for e in counted[s] if e[3] >= 400))
                         for s in counted}}
    print(f"  {kind:10s} {count} changes: BC {result['bc_per_change']:.2f}/change, Dataverse "
          f"{result['dv_per_change']:.2f}/change (all landed in {landed:.1f} s; polls BC {polls['bc']}; "
          f"errors {result['errors']})", flush=True)
    return result


async def _landed_all(batch: Batch) -> bool:
    return await batch.landed() >= batch.count


# ---- the budget run ---------------------------------------------------------------------------------------------

async def budget_run(stack: Stack, logs: Logs, backlog: int, scale: float, timeout: float) -> Json:
    """`backlog` updates (half accounts in Sales, half customers in BC, distinct coupled records) queued with no
    worker running; then one worker at the default budget (scaled by `scale`) against the sandbox's matching
    limits, 50 ms latency, until every change is at the destination."""
    half = backlog // 2
    started = time.monotonic()
    to_bc, to_dv = await couple_accounts(stack, "Bud ", half, 1500)
    print(f"  budget run: {2 * half} account/customer pairs coupled in {time.monotonic() - started:.0f} s",
          flush=True)
    await quiet(stack, logs, 3.0)
    for worker in stack.running_workers:
        await worker.stop()
    tokens: dict[str, str] = {}  # destination id → token
    calls: list[Callable[[], Awaitable[Any]]] = []
    for i in range(half):
        for side, (source, dest) in (("dv", to_bc[i]), ("bc", to_dv[i])):
            token = f"bd{len(tokens):07d}"
            tokens[dest] = token
            if side == "dv":
                calls.append(partial(stack.dv.update, "accounts", source, {"emailaddress1": f"{token}@bud.example"}))
            else:
                calls.append(partial(stack.bc.patch, "customers", source, {"email": f"{token}@bud.example"}))
    await gather_limited(calls, 16)
    await stack.bc.flush()
    await stack.dv.drain(60)
    await asyncio.sleep(5)  # the api stores and relays the last notifications
    budget, window = max(1, round(REAL_BUDGET / scale)), REAL_WINDOW / scale
    await stack.bc.faults(latency_ms=LATENCY_MS)
    await stack.dv.faults(latency_ms=LATENCY_MS)
    await stack.bc.limits(limit=budget, window_seconds=window, reset=True)
    await stack.dv.limits(requests=budget, window_seconds=window)
    mark = await logs.mark()
    await logs.new()
    env = {"BCSYNC_BC_REQUEST_BUDGET": str(budget), "BCSYNC_DATAVERSE_REQUEST_BUDGET": str(budget),
           "BCSYNC_REQUEST_WINDOW_SECONDS": str(window), "BCSYNC_BC_POLL_SECONDS": str(60 / scale)}
    launched = time.time()
    await stack.start_worker(env)
    written: dict[str, float] = {}
    counts = {"bc": 0, "dv": 0}
    exhausted_at: float | None = None  # when the busier system's budget was first spent (watch's estimate)
    last_print = time.monotonic()
    deadline = time.monotonic() + timeout
    while len(written) < len(tokens) and time.monotonic() < deadline:
        await asyncio.sleep(5.0)
        now = time.time()
        for system, fresh in (await logs.new()).items():
            counts[system] += len(fresh)
        if exhausted_at is None and max(counts.values()) >= budget:
            exhausted_at = now
        bc = {c["id"]: c.get("email") for c in await bc_all(stack, "customers", "Bud A")}
        dv = {a["accountid"]: a.get("emailaddress1")
              for a in await dv_pool(stack, "Bud C", half, "accountid,emailaddress1")}
        for dest, token in tokens.items():
            if dest not in written and f"{token}@bud.example" in (bc.get(dest), dv.get(dest)):
                written[dest] = now
        if time.monotonic() - last_print > 30:
            last_print = time.monotonic()
            print(f"    {now - launched:5.0f} s: {len(written)}/{len(tokens)} written; requests BC "
                  f"{counts['bc']} DV {counts['dv']}", flush=True)
        if exhausted_at is not None and now > exhausted_at + window + 20:
            break  # the window after the first budget is measured: the rest of the backlog is not needed
    entries = await logs.since(mark)  # the complete count (the watch above reads the logs' tails)
    await stack.bc.faults(latency_ms=0)
    await stack.dv.faults(latency_ms=0)
    await stack.bc.limits(limit=UNLIMITED, window_seconds=REAL_WINDOW, reset=True)
    await stack.dv.limits(requests=UNLIMITED, window_seconds=REAL_WINDOW)
    times = {s: sorted(e[4] for e in entries[s]) for s in entries}
    first = min([t[0] for t in times.values() if t] + [launched])
    end = max(written.values(), default=first)
    # the moment the busier system's budget was first spent, and the window after it
    spent = [t[budget - 1] for t in times.values() if len(t) >= budget]
    exhausted = min(spent) if spent else None
    steady = None
    in_window = None
    if exhausted is not None and sum(w <= exhausted + window for w in written.values()) < len(tokens):
        in_window = sum(exhausted < w <= exhausted + window for w in written.values())
        steady = in_window / window  # valid: changes were still waiting when that window ended
    busiest = {}
    for system, stamps in times.items():
        most, j = 0, 0
        for i, t in enumerate(stamps):
            while stamps[j] <= t - window:
                j += 1
            most = max(most, i - j + 1)
        busiest[system] = most
    result = {"backlog": len(tokens), "written": len(written), "budget": budget, "window": window, "scale": scale,
              "seconds": end - first, "overall_rate": len(written) / max(end - first, 1e-9),
              "exhausted_after": None if exhausted is None else exhausted - first, "steady_rate": steady,
              "bc": len(entries["bc"]), "dv": len(entries["dv"]),
              "bc_per_change": len(entries["bc"]) / max(len(written), 1),
              "dv_per_change": len(entries["dv"]) / max(len(written), 1),
              "throttled": {s: sum(e[3] == 429 for e in entries[s]) for s in entries},
              "busiest_window": busiest, "load": load(), "in_window": in_window,
              "shapes": {s: dict(Counter(shape(*e[:3]) for e in entries[s]).most_common(15)) for s in entries}}
    print(f"  budget run: {len(written)}/{len(tokens)} written in {result['seconds']:.0f} s "
          f"({result['overall_rate']:.2f}/s overall); budget spent after "
          f"{result['exhausted_after']} s; steady {steady} changes/s; 429s {result['throttled']}; "
          f"busiest window {busiest}", flush=True)
    return result


# ---- one variant ------------------------------------------------------------------------------------------------

async def run_variant(variant: Variant, args: argparse.Namespace, budget_backlog: int | None) -> Json:
    work = Path(tempfile.mkdtemp(prefix=f"bench-requests-{variant.name}-"))
    database_url, drop = await fresh_database()
    stack = VariantStack(work, variant.code, workers=1, database_url=database_url,
                         namespace=f"bench-{uuid.uuid4().hex[:8]}", env=COUNT_ENV)
    result: Json = {"variant": variant.name, "code": str(variant.code), "describe": variant.describe,
                    "dir": str(work), "kinds": {}}
    print(f"{variant.name}: {variant.describe} ({work})", flush=True)
    try:
        for attempt in range(1, 4):  # the working tree can be mid-edit for a moment
            try:
                await stack.start()
                break
            except AssertionError as exc:
                if attempt == 3:
                    raise
                print(f"  stack did not start ({str(exc)[:300]}); again in 60 s", flush=True)
                await asyncio.sleep(60)
                stack = VariantStack(work / f"retry{attempt}", variant.code, workers=1, database_url=database_url,
                                     namespace=f"bench-{uuid.uuid4().hex[:8]}", env=COUNT_ENV)
        await stack.bc.limits(limit=UNLIMITED, window_seconds=REAL_WINDOW)
        await stack.dv.limits(requests=UNLIMITED, window_seconds=REAL_WINDOW)
        await stack.register_webhooks()
        logs = Logs(stack, (await stack.dv.state())["application_user_id"])
        started = time.monotonic()
        records = await warm_up(stack, args.master, args.documents, args.lines)
        await quiet(stack, logs, args.quiet)
        result["warm_up_seconds"] = time.monotonic() - started
        print(f"  warm-up: {args.master} records per master-data kind coupled in {result['warm_up_seconds']:.0f} s",
              flush=True)
        seq = 0
        for kind in (*MASTER_KINDS, "order", "invoice"):
            count = args.documents if kind in ("order", "invoice") else args.master
            result["kinds"][kind] = await measure_kind(stack, logs, records, kind, count, seq, args)
            seq += count
        if budget_backlog != 0:
            per_change = max(statistics.mean(result["kinds"][k][f"{s}_per_change"] for k in ("account", "customer"))
                             for s in ("bc", "dv"))
            backlog = budget_backlog or auto_backlog(per_change, args.budget_scale, args.max_backlog)
            result["budget"] = await budget_run(stack, logs, backlog, args.budget_scale, args.budget_timeout)
    finally:
        await stack.stop()
        await drop()
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


def auto_backlog(per_change: float, scale: float, cap: int) -> int:
    """Enough changes to spend the first budget and then the whole next window: 4.5 budgets' worth at the
    requests per change counted (a backlog costs less per change than the counts: BC's poll at its default
    interval finds a company contact changed by several customer changes once), at least 4,000 (scaled)."""
    per_window = REAL_BUDGET / scale / max(per_change, 0.5)
    return min(cap, max(int(4000 / scale), int(4.5 * per_window)) // 2 * 2)


# ---- the report -------------------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def report(results: dict[str, Json], args: Json, meta: Json) -> str:
    before, after = results.get("before"), results.get("after")
    variants = [v for v in (before, after) if v]
    rows = []
    for kind in (*MASTER_KINDS, "order", "invoice"):
        cells = []
        for v in variants:
            k = v["kinds"].get(kind)
            cells += [fmt(k and k["bc_per_change"]), fmt(k and k["dv_per_change"])]
        rows.append(f"| {KIND_LABELS[kind]} | {' | '.join(cells)} |")
    averages = []
    for v in variants:
        kinds = [v["kinds"][k] for k in MASTER_KINDS if k in v["kinds"]]
        averages += [f"**{fmt(statistics.mean(k['bc_per_change'] for k in kinds))}**",
                     f"**{fmt(statistics.mean(k['dv_per_change'] for k in kinds))}**"]
    rows.append(f"| master-data mix (mean of the 5 kinds above) | {' | '.join(averages)} |")
    head = " | ".join(f"BC / change ({v['variant']}) | Dataverse / change ({v['variant']})" for v in variants)
    table = f"| kind | {head} |\n|---|{'---:|' * 2 * len(variants)}\n" + "\n".join(rows)
    budget_rows = []
    for v in variants:
        b = v.get("budget")
        if not b:
            continue
        budget_rows.append(
            f"| {v['variant']} | {b['written']}/{b['backlog']} | {b['seconds']:.0f} s | "
            f"{fmt(b['exhausted_after'], 0)} s | **{fmt(b['steady_rate'])}** | {fmt(b['overall_rate'])} | "
            f"{fmt(b['bc_per_change'])} / {fmt(b['dv_per_change'])} | "
            f"{b['busiest_window']['bc']} / {b['busiest_window']['dv']} | "
            f"{b['throttled']['bc']} / {b['throttled']['dv']} | {b['load']:.1f} |")
    ratio = ""
    rates = [v.get("budget", {}).get("steady_rate") for v in variants]
    if len(variants) == 2 and all(rates):
        ratio = f"Sustained rate after / before: **{rates[1] / rates[0]:.2f}**."
    mix = {v["variant"]: (statistics.mean(v["kinds"][k]["bc_per_change"] for k in MASTER_KINDS),
                          statistics.mean(v["kinds"][k]["dv_per_change"] for k in MASTER_KINDS)) for v in variants}
    mix_text = ""
    if before and after:
        (bb, bd), (ab, ad) = mix["before"], mix["after"]
        mix_text = (f"Master-data mix: BC {bb:.2f} → {ab:.2f} requests per change ({ab / bb:.2f}x), Dataverse "
                    f"{bd:.2f} → {ad:.2f} ({ad / bd:.2f}x).")
    details = []
    for v in variants:
        if v["variant"] != "after" and after:
            continue
        for kind in (*MASTER_KINDS, "order", "invoice"):
            k = v["kinds"].get(kind)
            if not k:
                continue
            parts = []
            for system, name in (("bc", "BC"), ("dv", "Dataverse")):
                shapes = ", ".join(f"`{s}` {n / k['changes']:.2f}" for s, n in list(k["shapes"][system].items())[:12])
                parts.append(f"{name}: {shapes or 'none'}")
            failed = ", ".join(f"`{s}` {n / k['changes']:.2f}" for system in ("bc", "dv")
                               for s, n in k.get("failed", {}).get(system, {}).items())
            details.append(f"- **{KIND_LABELS[kind]}** ({v['variant']}): " + "; ".join(parts)
                           + (f"; answered with an error (included above): {failed}" if failed else ""))
        b = v.get("budget")
        if b and b.get("shapes"):
            parts = []
            for system, name in (("bc", "BC"), ("dv", "Dataverse")):
                shapes = ", ".join(f"`{s}` {n / max(b['written'], 1):.2f}" for s, n in b["shapes"][system].items())
                parts.append(f"{name}: {shapes or 'none'}")
            details.append(f"- **budget run, per change written** ({v['variant']}; the run stops a little after "
                           f"the measured window, so requests of changes still under way are included): "
                           + "; ".join(parts))
    budget = args.get("budget_scale", 1)
    scale_text = "" if budget == 1 else (
        f" Scaled by {budget:g}: {round(REAL_BUDGET / budget)} requests per {REAL_WINDOW / budget:g} s (the same "
        f"20 requests/s), the poll interval alike.")
    budget_table = ""
    window, limit = REAL_WINDOW / budget, round(REAL_BUDGET / budget)
    if budget_rows:
        budget_table = f"""
### Sustained changes/s at the default budget

6,000 requests per 300 s per system on both sides (client `BCSYNC_BC_REQUEST_BUDGET` /
`BCSYNC_DATAVERSE_REQUEST_BUDGET` / `BCSYNC_REQUEST_WINDOW_SECONDS` at their defaults, the sandbox's limits
the same), {LATENCY_MS} ms added to every API request of both systems (`faults latency_ms`), BC's poll at its default
(60 s), one worker.{scale_text} The backlog (half account updates in Sales, half customer updates in BC, each
on its own coupled record) is queued while no worker runs, sized from the variant's own requests per
change (4.5 budgets' worth, at least 4,000) to last through the first budget and the whole next window.
Both budgets are sliding windows that a busy worker spends at once and then waits out, so the
**sustained** rate is the changes written in the {window:g} s after the busier system's {limit}th
request (a window that again holds a full budget), over {window:g} s. The run stops 20 s after that
window (the rest of the backlog is not needed): "run" is first request → last write seen, and "overall"
the changes written over it, which the first burst flatters.
Requests per change here are over the whole run, including changes still under way when it stopped.

{BUDGET_HEAD}
{chr(10).join(budget_rows)}

{ratio}
"""
    earlier = meta.get("before_when")
    before_when = f" (before: {earlier} UTC, an earlier run of this bench)" if earlier else ""
    together = ("Measured in two runs of this bench (`--before-json` took the baseline from the first), one variant "
                "at a time," if earlier else "Both in one run, one after the other,")
    command = (f"`python -m bench.requests --master {args['master']} --documents {args['documents']} "
               f"--lines {args['lines']}`")
    body = f"""
{command} (`make bench`). Machine: {meta['machine']}; 1-minute load {meta['load_start']:.1f} at the start.
Run {meta['when']} UTC{before_when}. **before** = the release `{meta['base']}` (a git worktree of that commit);
**after** = the working tree ({meta['head']}{', with uncommitted changes' if meta.get('dirty') else ''}). {together}
each on its own fresh PostgreSQL database and RabbitMQ namespace; the api and the
worker run from the variant's code, the sandbox from the working tree for both (the same instrument).

**Method.** Real processes as in tests/e2e/stack.py (`bcsync sandbox`, `bcsync api`, one `bcsync worker`), both
systems pushing webhooks (BC's notification window 0.2 s; BC contacts, which BC does not notify, polled every
second). Warm-up: {args['master']} accounts created in Sales and {args['master']} customers in BC, a person contact
under each (made in Sales under the first pool, in BC under the second), {args['master']} items in BC (unit PCS), all
coupled by the service. Then per kind {args['master']} changes (orders and invoices: {args['documents']}) by humans
through the sandbox's user endpoints, {args['rate']:g} per second, each on its own coupled record: e-mail of an
account / customer, phone of a contact, unit price of an item; a Sales order of {args['lines']} product lines
created and submitted; a BC order (one of those) posted. After each batch the bench waits until every change
is at the destination and then until the service made no request for {args['quiet']:g} s with no event queued,
so the echoes are in (our BC writes come back as notifications and are read; each customer change also
touches its company contact, which the poll finds and CONTACT reads). Counted: every BC API request (the
humans and the bench use the sandbox's control endpoints, which are not logged) and the Dataverse requests of
the application user, over the batch; not counted: BC's contact poll (a read per interval, not per change),
webhook registration. A `$batch` counts as one request, as both budgets count it. The budgets are lifted here
(they change when requests are made, not how many).

### Requests per change

{table}

{mix_text}

{budget_table}

**Requests by kind ({'after' if after else variants[0]['variant']}), per change** (method and path with ids, values and
times replaced; `$select` lists elided; at most 12 per system):

{chr(10).join(details)}
"""
    return body


# ---- main -------------------------------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> None:
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    worktree = Path(tempfile.mkdtemp(prefix="bcsync-base-")) / "tree"
    meta = {"machine": machine(), "load_start": load(), "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "base": args.base, "head": git("rev-parse", "--short", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    results: dict[str, Json] = {}
    saved = Path(tempfile.mkdtemp(prefix="bench-requests-")) / "results.json"
    try:
        if "before" in names and not args.before_json:
            git("worktree", "add", "--detach", str(worktree), args.base)
        backlog = 0 if args.no_budget else (None if args.backlog == "auto" else int(args.backlog))
        if args.before_json:  # a baseline measured by an earlier run (same machine, same bench)
            earlier = json.loads(args.before_json.read_text())
            results["before"] = earlier["results"]["before"]
            meta["before_when"] = earlier["meta"]["when"]
            names = [n for n in names if n != "before"]
        for name in names:
            code = worktree if name == "before" else ROOT
            describe = f"release {args.base}" if name == "before" else "working tree"
            results[name] = await run_variant(Variant(name, code, describe), args, backlog)
            saved.write_text(json.dumps({"args": vars(args), "meta": meta, "results": results}, indent=1,
                                        default=str))
    finally:
        if worktree.exists():
            git("worktree", "remove", "--force", str(worktree))
    print(f"results saved in {saved} (re-render: python -m bench.requests --from-json {saved})", flush=True)
    body = report(results, vars(args), meta)
    if not args.no_write:
        write_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE_COMMIT, help="the baseline commit (default %(default)s)")
    parser.add_argument("--variants", default="before,after", help="before, after or both (default)")
    parser.add_argument("--master", type=int, default=50, help="changes per master-data kind")
    parser.add_argument("--documents", type=int, default=15, help="orders, and invoices")
    parser.add_argument("--lines", type=int, default=3, help="product lines per order")
    parser.add_argument("--rate", type=float, default=10.0, help="human changes per second within a batch")
    parser.add_argument("--quiet", type=float, default=4.0, help="seconds without a request that end a batch")
    parser.add_argument("--backlog", default="auto", help="changes queued for the budget run (auto: sized from "
                                                          "the variant's requests per change)")
    parser.add_argument("--max-backlog", type=int, default=14000,
                        help="cap of the auto backlog (at 1 request per change the run needs about 12,500)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="divide budget and window by this (same requests/s, shorter run); 1 = real")
    parser.add_argument("--budget-timeout", type=float, default=1500.0)
    parser.add_argument("--no-budget", action="store_true", help="only the requests per change")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    parser.add_argument("--from-json", type=Path, help="re-render a saved run")
    parser.add_argument("--before-json", type=Path, help="take the baseline from a saved run's results.json")
    arguments = parser.parse_args()
    if arguments.from_json:
        data = json.loads(arguments.from_json.read_text())
        text = report(data["results"], data["args"], data["meta"])
        if not arguments.no_write:
            write_section(SECTION, text)
        print(text)
    else:
        faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: where a long run waits
        asyncio.run(main(arguments))
