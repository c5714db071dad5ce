"""Documents benchmark: from submit in Sales to the BC order, and from posting in BC to the Sales invoice.

    python -m bench.documents [--orders 100] [--lines 5] [--rate 2] [--posts 30]

Runs the real processes (sandbox, api, one worker) with the test harness, registers both systems'
webhooks, couples a customer and five products first, then submits `--orders` Sales orders of `--lines`
product lines on a fixed schedule (`--rate` per second). A poller reads BC every 100 ms and notes when
each order first exists; lag = that moment minus the moment the submit was answered. Then it posts `--posts`
of the BC orders and notes when each Sales invoice first exists. Results: the "Documents" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write_section
from tests.e2e.stack import Stack

DEFAULT_UNIT_ID = "4f3e2d1c-0b9a-4f8e-9d7c-6b5a4f3e2d1c"  # the sandbox org's "Primary Unit"
POLL = 0.1


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def first(stack: Stack, rows: Any, what: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        result = await rows()
        return result[0] if result else None

    return await stack.wait_until(found, timeout=60, interval=0.2, message=what)  # type: ignore[no-any-return]


async def prepare(stack: Stack, lines: int) -> tuple[str, list[dict[str, Any]]]:
    await stack.register_webhooks()
    await stack.bc.create("unitsOfMeasure", {"code": "PCS", "displayName": "Piece"})
    items = [await stack.bc.create("items", {"displayName": f"Bench item {i}", "unitPrice": 10 + i,
                                             "baseUnitOfMeasureCode": "PCS"}) for i in range(lines)]
    products = [await first(stack, lambda i=item: stack.dv.query("products", f"productnumber eq '{i['number']}'"),
                            f"product {item['number']}") for item in items]
    account = await stack.dv.create("accounts", {"name": "Bench Cycles", "customertypecode": 3})
    await first(stack, lambda: stack.bc.query("customers", "displayName eq 'Bench Cycles'"), "customer")
    return account, products


async def submit_orders(stack: Stack, account: str, products: list[dict[str, Any]], count: int,
                        rate: float) -> dict[str, float]:
    submitted: dict[str, float] = {}

    async def one(index: int) -> None:
        name = f"BENCH-{index:04d}"
        order = await stack.dv.create("salesorders", {"name": name,
                                                      "customerid_account@odata.bind": f"/accounts({account})"})
        for number, product in enumerate(products, 1):
            await stack.dv.create("salesorderdetails", {
                "salesorderid@odata.bind": f"/salesorders({order})", "lineitemnumber": number, "quantity": number,
                "productid@odata.bind": f"/products({product['productid']})", "priceperunit": product["price"],
                "uomid@odata.bind": f"/uoms({DEFAULT_UNIT_ID})"})
        await stack.dv.submit_order(order)
        submitted[name] = time.monotonic()

    start = time.monotonic()
    tasks = []
    for index in range(count):
        await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return submitted


async def watch(poll: Any, expected: int, seconds: float) -> dict[str, float]:
    """Call `poll()` every POLL s; the first time each key shows up."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + seconds
    while len(seen) < expected and time.monotonic() < deadline:
        now = time.monotonic()
        for key in await poll():
            seen.setdefault(key, now)
        await asyncio.sleep(POLL)
    return seen


async def main(orders: int, lines: int, rate: float, posts: int) -> None:
    async with Stack(Path(tempfile.mkdtemp(prefix="bench-documents-")), workers=1) as stack:
        account, products = await prepare(stack, lines)

        async def bc_orders() -> list[str]:
            rows = await stack.bc.query("salesOrders", "startswith(externalDocumentNumber,'BENCH-')", top=5000)
            return [r["externalDocumentNumber"] for r in rows]

        watcher = asyncio.create_task(watch(bc_orders, orders, orders / rate + 120))
        submitted = await submit_orders(stack, account, products, orders, rate)
        created = await watcher
        order_lags = [created[n] - t for n, t in submitted.items() if n in created]

        bc_rows = {r["externalDocumentNumber"]: r for r in
                   await stack.bc.query("salesOrders", "startswith(externalDocumentNumber,'BENCH-')", top=5000)}
        to_post = [bc_rows[n] for n in sorted(bc_rows)][:posts]
        posted_at: dict[str, float] = {}
        for row in to_post:
            await stack.bc.post_order(row["id"])
            [invoice] = await stack.bc.query("salesInvoices", f"orderId eq {row['id']}")
            posted_at[invoice["number"]] = time.monotonic()

        async def dv_invoices() -> list[str]:
            return [r["invoicenumber"] for r in await stack.dv.query("invoices", "startswith(invoicenumber,'PSI')")]

        invoiced = await watch(dv_invoices, len(posted_at), 120)
        invoice_lags = [invoiced[n] - t for n, t in posted_at.items() if n in invoiced]

    def row(label: str, lags: list[float], total: int) -> str:
        if not lags:
            return f"| {label} | 0 of {total} | - | - |"
        return (f"| {label} | {len(lags)} of {total} | {statistics.median(lags) * 1000:.0f} ms | "
                f"{percentile(lags, 0.99) * 1000:.0f} ms |")

    body = f"""
`python -m bench.documents --orders {orders} --lines {lines} --rate {rate:g} --posts {posts}` (`make bench`).
Machine: {machine()}. Real processes: sandbox, api and one worker (SQLite, local RabbitMQ); both systems
push webhooks (the sandbox BC's notification delay is 0.2 s; real BC waits about 30 s, which would add to
every BC → Sales figure). A poller reads the destination every {POLL * 1000:.0f} ms, so figures are up to
that much late.

| flow | arrived | p50 | p99 |
|---|---:|---:|---:|
{row(f"Sales order submitted → BC order with {lines} lines exists", order_lags, orders)}
{row("BC order posted → Sales invoice exists", invoice_lags, posts)}
"""
    write_section("Documents (order and invoice flow)", body)
    print(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--posts", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.lines, args.rate, args.posts))
