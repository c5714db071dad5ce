"""Ingest benchmark: sustained Dataverse webhook load against `bcsync api` beside a bare FastAPI endpoint
that only answers 202, measured in the same run, alternating, so that a noisy machine hits both alike.
Once on SQLite (the default database) and once on PostgreSQL (a fresh database per run).

    python -m bench.ingest [--rounds 3] [--seconds 8] [--rate 200] [--databases sqlite postgresql]
                           [--save FILE] [--baseline FILE]

Reports requests/s (closed loop, as fast as it goes) and p50/p99 latency of 202 answers at a fixed
arrival rate, medians over the rounds; writes the "Ingest" section of docs/benchmarks.md. `--save` keeps the
figures as JSON; `--baseline` shows an earlier run's saved figures (e.g. before a change) beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from bench.common import ROOT, delete_namespace, free_port, machine, start, wait_port, write_section
from bench.loadgen import closed_loop, open_loop
from schemas.mappings import MAPPINGS
from service.topology import Topology

SAMPLE = ROOT.parent / "shared" / "samples" / "dataverse-account-update.json"
if not SAMPLE.exists():
    SAMPLE = ROOT / "tests" / "samples" / "dataverse-account-update.json"
BROKER = os.environ.get("BCSYNC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "bench-key"
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
Figures = dict[str, float]
Results = dict[str, dict[str, list[Figures]]]  # database → "bare" | "bcsync" → one entry per round


def body_factory() -> Callable[[], bytes]:
    template = json.loads(SAMPLE.read_text())

    def next_body() -> bytes:
        template["OperationId"] = str(uuid.uuid4())  # distinct deliveries: nothing is deduplicated away
        return json.dumps(template).encode()

    return next_body


async def drained(port: int | None, timeout: float = 300.0) -> float:
    """Seconds until the api's outbox is empty again (its relay caught up with the closed loop), so that the
    latencies at a fixed rate are not those of a relay still publishing the backlog. 0 for the bare endpoint."""
    if port is None:
        return 0.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        while loop.time() - started < timeout:
            metrics = (await http.get("/metrics")).text
            pending = next((float(line.split()[1]) for line in metrics.splitlines()
                            if line.startswith("bcsync_outbox_pending ")), None)
            if pending == 0:
                return loop.time() - started
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the outbox did not drain within {timeout:g} s")


async def measure(port: int, path: str, seconds: float, rate: float, connections: int,
                  metrics_port: int | None) -> Figures:
    bodies = body_factory()
    await closed_loop(port, path, bodies, connections, 1.0)  # warm-up
    throughput = await closed_loop(port, path, bodies, connections, seconds)
    drain = await drained(metrics_port)
    latency = await open_loop(port, path, bodies, rate, seconds)
    await drained(metrics_port)
    if throughput.errors or latency.errors:
        raise RuntimeError(f"non-202 answers: {throughput.errors + latency.errors}")
    return {"rps": throughput.rate, "p50": latency.percentile(0.50) * 1000, "p99": latency.percentile(0.99) * 1000,
            "achieved": latency.rate, "drain": drain}


async def database_url(database: str, work: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    """The database's URL and what drops it afterwards."""
    if database == "sqlite":
        async def nothing() -> None:
            return None

        return f"sqlite+aiosqlite:///{work}/bcsync.db", nothing
    from bench.sync import fresh_database  # PostgreSQL only: it pulls the e2e stack in

    url, drop = await fresh_database()
    return str(url), drop


async def run_database(database: str, rounds: int, seconds: float, rate: float,
                       connections: int) -> dict[str, list[Figures]]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-ingest-{database}-"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    bare_port, api_port = free_port(), free_port()
    url, drop = await database_url(database, work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")} | {
        "BCSYNC_DATABASE_URL": url, "BCSYNC_NAMESPACE": namespace,
        "BCSYNC_BROKER_URL": BROKER, "BCSYNC_DATAVERSE_WEBHOOK_KEY": KEY, "BCSYNC_BC_CLIENT_STATE": "s",
        "BCSYNC_INTEGRATION_USER_ID": "0b7e9c2d-4f61-4a8e-9d3c-5e6f7a8b9c0d", "BCSYNC_PORT": str(api_port),
        "BCSYNC_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    }
    bin_dir = Path(sys.executable).parent
    bare = start([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port), "--log-level",
                  "warning", "--no-access-log"], env, work / "bare.log")
    api = start([str(bin_dir / "bcsync"), "api"], env, work / "api.log")
    results: dict[str, list[Figures]] = {"bare": [], "bcsync": []}
    try:
        wait_port(bare_port)
        wait_port(api_port)
        await asyncio.sleep(2)  # the api connects to RabbitMQ
        for round_ in range(rounds):
            for name, port, path, metrics in (("bare", bare_port, "/webhooks/dataverse", None),
                                              ("bcsync", api_port, f"/webhooks/dataverse?code={KEY}", api_port)):
                figures = await measure(port, path, seconds, rate, connections, metrics)
                results[name].append(figures)
                print(f"{LABELS[database]:10} round {round_ + 1} {name:7} {figures['rps']:7.0f} req/s"
                      f"   p50 {figures['p50']:6.1f} ms   p99 {figures['p99']:6.1f} ms at {figures['achieved']:.0f}"
                      f" req/s   outbox drained in {figures['drain']:.1f} s", flush=True)
    finally:
        for process in (bare, api):
            process.terminate()
            process.wait(15)
        topology = Topology(namespace)
        await delete_namespace(BROKER, namespace, [topology.mapping_queue(m.name) for m in MAPPINGS]
                               + [topology.dead_queue] + [topology.delay_queue(s) for s in topology.retry_delays],
                               [topology.events_exchange, topology.retry_exchange, topology.dead_exchange])
        await drop()
    return results


def median(runs: list[Figures], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def drain(runs: list[Figures]) -> str:
    return f"{median(runs, 'drain'):.1f} s" if all("drain" in r for r in runs) else "not measured"


def table(results: Results, baseline: Results | None, rate: float) -> str:
    rows = [f"| database | endpoint | requests/s (closed loop) | ratio to bare | p50 at {rate:.0f}/s "
            f"| p99 at {rate:.0f}/s | outbox drain after the closed loop |", "|---|---|---:|---:|---:|---:|---:|"]
    for database, runs in results.items():
        bare = median(runs["bare"], "rps")
        shown = [("bare FastAPI, answers 202", runs["bare"], bare)]
        if baseline and database in baseline:
            shown.append(("`bcsync api` before", baseline[database]["bcsync"], median(baseline[database]["bare"],
                                                                                       "rps")))
        shown.append(("`bcsync api`", runs["bcsync"], bare))
        rows += [f"| {LABELS[database]} | {label} | {median(r, 'rps'):.0f} | {median(r, 'rps') / reference:.2f} "
                 f"| {median(r, 'p50'):.1f} ms | {median(r, 'p99'):.1f} ms | {drain(r)} |"
                 for label, r, reference in shown]
    return "\n".join(rows)


async def main(args: argparse.Namespace) -> None:
    results: Results = {}
    for database in args.databases:
        results[database] = await run_database(database, args.rounds, args.seconds, args.rate, args.connections)
    if args.save:
        Path(args.save).write_text(json.dumps(results))
    baseline: Results | None = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    before = ("The `before` rows are the same benchmark run on the code before issue 16 (each ratio against "
              "the bare endpoint of its own run). ") if baseline else ""
    ratios = ", ".join(
        f"{LABELS[d]} **{median(r['bcsync'], 'rps') / median(r['bare'], 'rps'):.2f}**" for d, r in results.items())
    p99s = ", ".join(f"{LABELS[d]} **{median(r['bcsync'], 'p99'):.1f} ms**" for d, r in results.items())
    body = f"""
`python -m bench.ingest --rounds {args.rounds} --seconds {args.seconds:g} --rate {args.rate:g} --connections \
{args.connections}` (`make bench`). Machine: {machine()}. Load generator: a separate process (bench/loadgen.py,
raw asyncio HTTP/1.1 keep-alive, {args.connections} connections for the closed loop); both servers run one
uvicorn process. bcsync with the local RabbitMQ, on SQLite (its default, a file in a temporary folder) and on
the local PostgreSQL (a fresh database per run); every request a distinct Dataverse Update of
{SAMPLE.stat().st_size:,} bytes (validated, stored in the outbox and committed before its 202, relayed with
publisher confirms in the same process). Per database, medians of {args.rounds} rounds alternating between
the bare endpoint and bcsync (a round: 1 s warm-up, {args.seconds:g} s closed loop, {args.seconds:g} s at
{args.rate:g} requests/s for the latencies, which include any queueing in the server; before it, the bench
waits until the outbox is empty, its relay having published what the closed loop stored: the drain column).
{before}

{table(results, baseline, args.rate)}

Throughput ratio bcsync / bare: {ratios} (goal ≥ 0.4). p99 of bcsync at {args.rate:g} req/s: {p99s}
(goal < 50 ms).
"""
    write_section("Ingest (webhook → 202)", body)
    print(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--databases", nargs="+", choices=sorted(LABELS), default=["sqlite", "postgresql"])
    parser.add_argument("--save", help="write the figures as JSON to this file")
    parser.add_argument("--baseline", help="an earlier run's --save file, shown as the `before` rows")
    asyncio.run(main(parser.parse_args()))
