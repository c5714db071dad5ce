"""Full synchronization benchmark: 10,000 customers and 10,000 items in BC, 3,000 of the customers already
in Sales (same number), then one full synchronization through the admin API.

    python -m bench.fullsync [--customers 10000] [--items 10000] [--overlap 3000] [--real-budget]

Runs the real processes (sandbox, api, one worker; SQLite). By default the request budgets are raised on both
sides so that the machine, not the 6,000/5 min service protection, is measured. `--real-budget` keeps the real
budget (6,000 requests per 300 s per system, in the sandbox and in the connectors: the defaults) and compares
the run's time with the least time that budget allows for the requests the run made (`budget_minimum`).

Measures the run's time, the requests per system (from the sandbox's request logs, by kind), the lines'
timestamps (dependency order), the worker's resident memory (sampled every 0.5 s: idle before, peak during),
and checks the outcome: no duplicates, everything coupled. Results: the "Full synchronization" section of
docs/benchmarks.md (`--no-doc`: printed only; `--json FILE`: the figures as JSON too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import machine, write_section
from tests.e2e.stack import Stack

UNLIMITED = str(10**9)
BUDGET, WINDOW = 6000, 300.0  # the real service protection, and the connectors' defaults
LOG_ROWS = 20000  # rows of a request log read per poll at most (the BC sandbox keeps the last 20,000)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_memory(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_mb(pid))
        await asyncio.sleep(0.5)


def budget_minimum(requests: int, limit: int = BUDGET, window: float = WINDOW) -> float:
    """The least time `requests` requests can take under a sliding window of `limit` per `window` seconds, as
    the connectors keep it (service/connectors/budget.py): a request counts from its completion and may start
    once fewer than `limit` completions lie within the last `window` seconds. So request n + limit cannot start
    before request n completed plus `window`: after a first burst of `limit`, each further burst of up to
    `limit` waits a whole window — floor((requests - 1) / limit) windows (plus the requests' own time, taken
    here as zero). The fluid figure ((requests - limit) / (limit / window)) is lower between multiples of
    `limit`; it is given beside this one."""
    return window * ((requests - 1) // limit) if requests > 0 else 0.0


def fluid_minimum(requests: int, limit: int = BUDGET, window: float = WINDOW) -> float:
    return max(0, requests - limit) * window / limit


_ONE = re.compile(r"\([^)]*\)$")  # a key segment: one record


def request_kind(system: str, row: dict[str, Any]) -> str:
    """`GET accounts?$filter`, `GET customers(id)`, `POST products`, ... (the entity set and the shape)."""
    path = row["path"]
    query = row.get("query") or ""
    if "?" in path:
        path, query = path.split("?", 1)
    segment = path.rstrip("/").rsplit("/", 1)[-1]
    one = bool(_ONE.search(segment))
    name = _ONE.sub("", segment) + ("(id)" if one else "")
    if segment.startswith("Microsoft.Dynamics.CRM") or ("." in segment and not one):
        name = segment  # an action
    parent = path.rstrip("/").rsplit("/", 2)
    if _ONE.search(parent[-2] if len(parent) > 2 else "") and not one:  # navigation: accounts(id)/contact_...
        name = f"{_ONE.sub('', parent[-2])}(id)/{segment}"
    shape = ""
    if row["method"] == "GET" and not one:
        shape = "?$filter" if "%24filter" in query or "$filter" in query else ""
        if "skiptoken" in query.lower():
            shape += " (next page)"
    return f"{row['method']} {name}{shape}"


class RequestCounter:
    """The integration's requests per system while it runs, from the sandbox's request logs (their `total`
    never goes back; the rows of each poll that are new give the kinds)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.start: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.kinds: dict[str, Counter[str]] = {"bc": Counter(), "dataverse": Counter()}
        self.unseen: Counter[str] = Counter()  # new requests whose rows the log no longer held

    async def _log(self, system: str) -> tuple[int, list[dict[str, Any]]]:
        if system == "bc":
            body = await self.stack.bc.call("GET", "requests", limit=LOG_ROWS)
        else:
            body = await self.stack.dv.call("GET", "requests", limit=LOG_ROWS)
        return int(body["total"]), list(body["value"])

    async def begin(self) -> None:
        for system in self.kinds:
            total, _ = await self._log(system)
            self.start[system] = self.last[system] = total

    async def poll(self) -> None:
        for system, kinds in self.kinds.items():
            total, rows = await self._log(system)
            new = total - self.last[system]
            if new > 0:
                fresh = rows[-new:] if new <= len(rows) else rows
                kinds.update(request_kind(system, row) for row in fresh)
                self.unseen[system] += max(0, new - len(fresh))
            self.last[system] = total

    def counts(self) -> dict[str, int]:
        return {system: self.last[system] - self.start[system] for system in self.kinds}

    async def run(self, stop: asyncio.Event, every: float = 2.0) -> None:
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
        await self.poll()


async def main(customers: int, items: int, overlap: int, real_budget: bool, doc: bool, out: str | None) -> None:
    env = {} if real_budget else {"BCSYNC_BC_REQUEST_BUDGET": UNLIMITED, "BCSYNC_DATAVERSE_REQUEST_BUDGET": UNLIMITED}
    async with Stack(Path(tempfile.mkdtemp(prefix="bench-fullsync-")), workers=1, env=env) as stack:
        if real_budget:
            await stack.bc.limits(limit=BUDGET, window_seconds=WINDOW)
            await stack.dv.limits(requests=BUDGET, window_seconds=WINDOW)
        else:
            await stack.bc.limits(limit=10**9, window_seconds=300)
            await stack.dv.limits(requests=10**9, window_seconds=300)
        worker_started = time.monotonic()
        counter = RequestCounter(stack)
        await counter.begin()
        await stack.bc.seed(customers=customers, items=items, salespeople=0, contactsPerCustomer=0)
        bc_customers = await stack.bc.query("customers", None, top=customers + 100)
        gate = asyncio.Semaphore(16)

        async def pre_existing(customer: dict[str, Any]) -> None:
            async with gate:
                await stack.dv.create("accounts", {"name": customer["displayName"], "customertypecode": 3,
                                                   "accountnumber": customer["number"]})

        await asyncio.gather(*(pre_existing(c) for c in bc_customers[:overlap]))
        worker = stack.running_workers[0]
        assert worker.pid is not None
        await asyncio.sleep(2)
        idle = rss_mb(worker.pid)
        await counter.poll()
        before_run = counter.counts()  # the worker's own requests since it started (setup, polling)
        before_run_seconds = time.monotonic() - worker_started
        counter.start = dict(counter.last)
        counter.kinds = {"bc": Counter(), "dataverse": Counter()}
        samples: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_memory(worker.pid, samples, stop))
        counting = asyncio.create_task(counter.run(stop))
        started = time.monotonic()
        response = await stack.admin("/admin/full-sync", "POST")
        assert response.status_code == 202, response.text

        async def finished() -> dict[str, Any] | None:
            run = (await stack.admin("/admin/full-sync?review_lines=false")).json()["run"]
            return run if run and run["status"] in ("finished", "error") else None

        run = await stack.wait_until(finished, timeout=4 * 3600, interval=1.0, message="full synchronization")
        elapsed = time.monotonic() - started
        stop.set()
        await sampler
        await counting
        state = await stack.dv.state()
        couplings = {}
        for mapping in ("CUSTOMER", "ITEM-PRODUCT"):
            total, after = 0, 0
            while page := (await stack.admin(f"/admin/couplings?mapping={mapping}&limit=1000&after={after}")).json():
                total += len(page)
                after = page[-1]["id"]
            couplings[mapping] = total

    requests = counter.counts()
    minimum = {system: budget_minimum(n) for system, n in requests.items()}
    fluid = {system: fluid_minimum(n) for system, n in requests.items()}
    bound = max(minimum.values())
    ratio = elapsed / bound if bound else None
    counts = state.get("counts") or state.get("rows") or {}
    accounts, products = counts.get("account"), counts.get("product")
    peak = max(samples or [idle])
    lines = "\n".join(
        f"| {line['mapping']} | {line['status']} | {line['started_at'] or '-'} | {line['finished_at'] or '-'} | "
        f"{line['counts'].get('inserted', 0)} | {line['counts'].get('coupled', 0)} | "
        f"{line['counts'].get('modified', 0)} | {line['counts'].get('unchanged', 0)} | "
        f"{line['counts'].get('skipped', 0)} | {line['counts'].get('failed', 0)} |"
        for line in run["lines"])
    kinds = "\n".join(f"| {system} | `{kind}` | {n} |" for system in ("bc", "dataverse")
                      for kind, n in counter.kinds[system].most_common(12))
    option = " --real-budget" if real_budget else ""
    budget_text = (
        "at the real request budget: 6,000 requests per 300 s per system, in the sandbox and in the connectors "
        "(their defaults)" if real_budget else
        "request budgets raised on both sides so that the machine is measured (at the real 6,000 requests / "
        "5 min per system the run takes at least the budget minimum below, and the connectors keep to it)")
    ratio_text = f"**{ratio:.2f}x** the budget minimum" if ratio else "no budget minimum (under one window's budget)"
    body = f"""
`python -m bench.fullsync --customers {customers} --items {items} --overlap {overlap}{option}`.
Machine: {machine()}. Real processes: sandbox, api, one worker (SQLite, local RabbitMQ), {budget_text}.

- Run status **{run['status']}** in **{elapsed:.0f} s** ({(customers + items) / elapsed:.1f} records/s).
- Requests during the run (sandbox request logs): BC **{requests['bc']}**, Dataverse **{requests['dataverse']}**
  (before it, since the worker started {before_run_seconds:.0f} s earlier: BC {before_run['bc']},
  Dataverse {before_run['dataverse']}). Budget minimum for them: BC {minimum['bc']:.0f} s, Dataverse
  {minimum['dataverse']:.0f} s (fluid: {fluid['bc']:.0f} s / {fluid['dataverse']:.0f} s): the run took
  {ratio_text}.
- Worker memory: {idle:.0f} MB idle before, **{peak:.0f} MB peak** during the run (sampled every 0.5 s).
- Outcome: Dataverse accounts {accounts} (BC customers {customers}: {overlap} existed in Sales),
  products {products} (BC items {items}); couplings CUSTOMER {couplings['CUSTOMER']},
  ITEM-PRODUCT {couplings['ITEM-PRODUCT']}.

| line | status | started | finished | inserted | coupled | modified | unchanged | skipped | failed |
|---|---|---|---|---:|---:|---:|---:|---:|---:|
{lines}

| system | request (most frequent) | count |
|---|---|---:|
{kinds}
"""
    figures = {"customers": customers, "items": items, "overlap": overlap, "real_budget": real_budget,
               "status": run["status"], "seconds": round(elapsed, 1), "requests": requests,
               "requests_before_run": before_run, "budget_minimum": minimum, "fluid_minimum": fluid,
               "ratio": ratio, "memory_idle_mb": round(idle, 1), "memory_peak_mb": round(peak, 1),
               "accounts": accounts, "products": products, "couplings": couplings,
               "kinds": {s: dict(k.most_common()) for s, k in counter.kinds.items()},
               "unseen": dict(counter.unseen), "lines": run["lines"]}
    if out:
        Path(out).write_text(json.dumps(figures, indent=2, default=str))
    if doc:
        write_section("Full synchronization", body)
    print(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--overlap", type=int, default=3_000)
    parser.add_argument("--real-budget", action="store_true",
                        help="keep the real 6,000 requests / 300 s per system; compare with the budget minimum")
    parser.add_argument("--no-doc", action="store_true", help="print the results; leave docs/benchmarks.md alone")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    asyncio.run(main(args.customers, args.items, args.overlap, args.real_budget, not args.no_doc, args.json))
