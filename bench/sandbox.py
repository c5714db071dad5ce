"""Sandbox benchmark: seeding 10,000 customers and 10,000 items, and serving 5,000-row pages.

    python -m bench.sandbox [--rounds 5]

Starts `bcsync sandbox` as its own process, times the seed through the control endpoint and then pages
of 5,000 rows from the BC and Dataverse APIs with a real token; medians of the rounds go to the
"Sandbox" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import free_port, machine, start, wait_port, write_section
from sandbox.config import DEMO_CLIENT_ID as CLIENT
from sandbox.config import DEMO_CLIENT_SECRET as SECRET
from sandbox.config import DEMO_COMPANY_ID as COMPANY
from sandbox.config import DEMO_TENANT_ID as TENANT


def token(entra: int, ca: str, scope: str) -> str:
    response = httpx.post(f"https://127.0.0.1:{entra}/{TENANT}/oauth2/v2.0/token", verify=ca, data={
        "client_id": CLIENT, "client_secret": SECRET, "scope": scope, "grant_type": "client_credentials"})
    response.raise_for_status()
    return str(response.json()["access_token"])


def timed(call) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    response.raise_for_status()
    return time.perf_counter() - started, response


def page_time(call) -> float:
    elapsed, response = timed(call)
    rows = len(response.json()["value"])
    assert rows == 5000, f"expected a 5,000-row page, got {rows}"
    return elapsed


def main(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    bc, dv, entra = free_port(), free_port(), free_port()
    ca = str(work / "ca.pem")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")}
    process = start([sys.executable, "-m", "sandbox", "--bc-port", str(bc), "--dataverse-port", str(dv),
                     "--entra-port", str(entra), "--ca-file", ca], env, work / "sandbox.log")
    seeds, bc_pages, dv_pages = [], [], []
    try:
        for port in (bc, dv, entra):
            wait_port(port)
        bc_token = token(entra, ca, "https://api.businesscentral.dynamics.com/.default")
        dv_token = token(entra, ca, f"http://127.0.0.1:{dv}/.default")
        control = httpx.Client(base_url=f"http://127.0.0.1:{bc}/_sandbox", timeout=120)
        api = httpx.Client(timeout=60)
        bc_url = f"http://127.0.0.1:{bc}/v2.0/{TENANT}/production/api/v2.0/companies({COMPANY})/customers"
        bc_headers = {"Authorization": f"Bearer {bc_token}", "Prefer": "odata.maxpagesize=5000"}
        for _ in range(rounds):
            control.post("/reset").raise_for_status()
            seeds.append(timed(lambda: control.post("/seed", json={"customers": 10_000, "items": 10_000,
                                                                   "contactsPerCustomer": 0}))[0])
            bc_pages.append(page_time(lambda: api.get(bc_url, headers=bc_headers)))
        dv_control = httpx.Client(base_url=f"http://127.0.0.1:{dv}/_sandbox", timeout=120)
        dv_control.post("/seed", json={"accounts": 6000, "contacts_per_account": 0}).raise_for_status()
        dv_url = f"http://127.0.0.1:{dv}/api/data/v9.2/accounts"
        dv_headers = {"Authorization": f"Bearer {dv_token}", "Prefer": "odata.maxpagesize=5000"}
        for _ in range(rounds):
            dv_pages.append(page_time(lambda: api.get(dv_url, headers=dv_headers)))
    finally:
        process.terminate()
        process.wait(15)
    def span(values: list[float], unit: float, fmt: str) -> str:
        return f"{statistics.median(values) * unit:{fmt}} [{min(values) * unit:{fmt}}-{max(values) * unit:{fmt}}]"

    body = f"""
`python -m bench.sandbox --rounds {rounds}` (`make bench`). Machine: {machine()}. The sandbox runs as its own
process; the client is this script over HTTP. Medians of {rounds} rounds (min-max in brackets).

| what | median | goal |
|---|---:|---:|
| seed 10,000 customers + 10,000 items (BC control endpoint) | {span(seeds, 1, ".2f")} s | < 10 s |
| one 5,000-row page of BC customers (API v2.0, bearer token) | {span(bc_pages, 1000, ".0f")} ms | < 1 s |
| one 5,000-row page of Dataverse accounts (Web API) | {span(dv_pages, 1000, ".0f")} ms | < 1 s |
"""
    write_section("Sandbox (seed and paging)", body)
    print(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    main(parser.parse_args().rounds)
