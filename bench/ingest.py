"""Ingest benchmark: sustained Dataverse webhook load against `bcsync api` beside a bare FastAPI endpoint
that only answers 202, measured in the same run, alternating, so that a noisy machine hits both alike.

    python -m bench.ingest [--rounds 3] [--seconds 8] [--rate 200]

Reports requests/s (closed loop, as fast as it goes) and p50/p99 latency of 202 answers at a fixed
arrival rate, medians over the rounds; writes the "Ingest" section of docs/benchmarks.md.
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
from pathlib import Path

from bench.common import ROOT, delete_namespace, free_port, machine, start, wait_port, write_section
from bench.loadgen import closed_loop, open_loop
from schemas.mappings import MAPPINGS
from service.topology import Topology

SAMPLE = ROOT.parent / "shared" / "samples" / "dataverse-account-update.json"
if not SAMPLE.exists():
    SAMPLE = ROOT / "tests" / "samples" / "dataverse-account-update.json"
BROKER = os.environ.get("BCSYNC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "bench-key"


def body_factory() -> callable:
    template = json.loads(SAMPLE.read_text())

    def next_body() -> bytes:
        template["OperationId"] = str(uuid.uuid4())  # distinct deliveries: nothing is deduplicated away
        return json.dumps(template).encode()

    return next_body


async def measure(port: int, path: str, seconds: float, rate: float, connections: int) -> dict[str, float]:
    bodies = body_factory()
    await closed_loop(port, path, bodies, connections, 1.0)  # warm-up
    throughput = await closed_loop(port, path, bodies, connections, seconds)
    latency = await open_loop(port, path, bodies, rate, seconds)
    if throughput.errors or latency.errors:
        raise RuntimeError(f"non-202 answers: {throughput.errors + latency.errors}")
    return {"rps": throughput.rate, "p50": latency.percentile(0.50) * 1000, "p99": latency.percentile(0.99) * 1000,
            "achieved": latency.rate}


async def main(rounds: int, seconds: float, rate: float, connections: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    bare_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")} | {
        "BCSYNC_DATABASE_URL": f"sqlite+aiosqlite:///{work}/bcsync.db", "BCSYNC_NAMESPACE": namespace,
        "BCSYNC_BROKER_URL": BROKER, "BCSYNC_DATAVERSE_WEBHOOK_KEY": KEY, "BCSYNC_BC_CLIENT_STATE": "s",
        "BCSYNC_INTEGRATION_USER_ID": "0b7e9c2d-4f61-4a8e-9d3c-5e6f7a8b9c0d", "BCSYNC_PORT": str(api_port),
        "BCSYNC_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    }
    bin_dir = Path(sys.executable).parent
    bare = start([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port), "--log-level",
                  "warning", "--no-access-log"], env, work / "bare.log")
    api = start([str(bin_dir / "bcsync"), "api"], env, work / "api.log")
    results: dict[str, list[dict[str, float]]] = {"bare": [], "bcsync": []}
    try:
        wait_port(bare_port)
        wait_port(api_port)
        await asyncio.sleep(2)  # the api connects to RabbitMQ
        for round_ in range(rounds):
            for name, port, path in (("bare", bare_port, "/webhooks/dataverse"),
                                     ("bcsync", api_port, f"/webhooks/dataverse?code={KEY}")):
                figures = await measure(port, path, seconds, rate, connections)
                results[name].append(figures)
                print(f"round {round_ + 1} {name:7} {figures['rps']:7.0f} req/s   p50 {figures['p50']:6.1f} ms"
                      f"   p99 {figures['p99']:6.1f} ms at {figures['achieved']:.0f} req/s", flush=True)
    finally:
        for process in (bare, api):
            process.terminate()
            process.wait(15)
        topology = Topology(namespace)
        await delete_namespace(BROKER, namespace, [topology.mapping_queue(m.name) for m in MAPPINGS]
                               + [topology.dead_queue] + [topology.delay_queue(s) for s in topology.retry_delays],
                               [topology.events_exchange, topology.retry_exchange, topology.dead_exchange])

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    ratio = med("bcsync", "rps") / med("bare", "rps")
    table = "\n".join([
        f"| endpoint | requests/s (closed loop) | p50 at {rate:.0f}/s | p99 at {rate:.0f}/s |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {med(n, 'rps'):.0f} | {med(n, 'p50'):.1f} ms | {med(n, 'p99'):.1f} ms |"
          for n, label in (("bare", "bare FastAPI, answers 202"),
                           ("bcsync", "`bcsync api` (SQLite outbox + RabbitMQ)"))),
    ])
    body = f"""
`python -m bench.ingest --rounds {rounds} --seconds {seconds:g} --rate {rate:g} --connections {connections}`
(`make bench`). Machine: {machine()}. Load generator: a separate process (bench/loadgen.py, raw asyncio
HTTP/1.1 keep-alive); both servers run one uvicorn process; bcsync on its default SQLite database with the
local RabbitMQ, every request a distinct Dataverse Update (stored, deduplicated, relayed with confirms).
Medians of {rounds} alternating rounds.

{table}

Throughput ratio bcsync / bare: **{ratio:.2f}** (goal ≥ 0.5). p99 of bcsync at {rate:g} req/s:
**{med('bcsync', 'p99'):.1f} ms** (goal < 50 ms).
"""
    write_section("Ingest (webhook → 202)", body)
    print(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.seconds, args.rate, args.connections))
