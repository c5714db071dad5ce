"""Issue 7: the fault-injection suite. Each case runs the real processes under a steady load of changes on
both sides, injects one fault, and checks after the recovery that every change arrived with its final values,
nothing was duplicated and nothing was dead-lettered (tests/faults/scenario.py has the timeline and the
checks, docs/reliability.md the figures).

Run with `make test-faults` or `pytest tests/faults` (not part of `make test`: it takes minutes).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.lease import LEASE_SECONDS
from tests.e2e.stack import Stack
from tests.faults import postgres
from tests.faults.scenario import FAULT_ENV, Row, Window, run_case, wait_for_log
from tests.harness import TcpProxy

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
# A record whose worker died (or lost its database) mid-apply keeps its lease until it runs out: the cases that
# cause that wait this long for the accepted changes (and pytest's timeout allows for it).
LEASED = LEASE_SECONDS + 45
LEASED_TEST_TIMEOUT = int(LEASED + 180)


def check(row: Row) -> None:
    """The acceptance of every case. The notes go out as one string: pytest shortens a list in the message,
    and the notes are what says why a case failed in a CI log."""
    notes = "\n".join(row.notes)
    assert row.accepted_missing == 0, notes
    assert row.lost == 0, notes
    assert row.duplicated == 0, notes
    assert row.dead_letters == 0, notes
    assert row.stranded == 0, notes


def outbox_pending(stack: Stack) -> int:
    """Unpublished outbox rows, read straight from the SQLite store (the api may be dead)."""
    path = stack.database_url.split("///", 1)[1]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT count(*) FROM outbox_event WHERE published_at IS NULL").fetchone()[0])


def epoch(line: dict[str, Any]) -> float:
    """A log line's time (structlog writes ISO 8601 UTC)."""
    return datetime.fromisoformat(str(line.get("timestamp"))).timestamp()


def lease_waits(stack: Stack) -> str:
    """How long records found busy (a lease held by a dead worker or a lost connection) went round the delay
    queue: the first and last "record busy" lines."""
    busy = sorted(epoch(e) for e in stack.worker_log_events("record busy; requeued"))
    if not busy:
        return "no record was found busy"
    span = busy[-1] - busy[0]
    return (f"{len(busy)} requeues of records found busy (their lease held by the dead worker or by a run whose "
            f"database went away) over {span:.0f} s (a record lease lasts {LEASE_SECONDS:.0f} s unless renewed)")


async def test_rabbitmq_connection_cut_and_restored(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    proxy = TcpProxy()
    await proxy.start()
    try:
        async with Stack(tmp_path, workers=2, env={**FAULT_ENV, "BCSYNC_BROKER_URL": proxy.url}) as stack:

            async def cut(stack: Stack, window: Window) -> None:
                window.begin()
                proxy.cut()
                await asyncio.sleep(6)
                status = (await stack.admin("/admin/status")).json()
                window.note(f"after 6 s without RabbitMQ the api reported broker_connected="
                            f"{status['broker_connected']} and {status['outbox_pending']} events waiting in the "
                            "outbox")
                proxy.restore()
                window.end()

            row = await run_case(stack, 1, "RabbitMQ connection cut and restored", cut)
    finally:
        await proxy.close()
    fault_rows[row.case] = row
    check(row)


@pytest.mark.timeout(LEASED_TEST_TIMEOUT)
async def test_worker_killed_mid_batch(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    async with Stack(tmp_path, workers=2, env=FAULT_ENV) as stack:

        async def kill(stack: Stack, window: Window) -> None:
            victim = stack.running_workers[0]
            # Kill while it applies a creation from Sales (read the account or contact, resolve its lookups,
            # create the BC record): it dies with that message unacknowledged and the record's lease taken, and
            # with whatever else its prefetch held. BC answers in 100 ms here, as the cloud does (the sandbox
            # alone answers in about 1 ms, and the apply would be over before the kill lands).
            await stack.bc.faults(latency_ms=100)
            seen = len(victim.events())
            received = await wait_for_log(victim.events, lambda e: e.get("event") == "change event received"
                                          and e.get("source") == "dataverse" and e.get("change_type") == "created",
                                          seen)
            await asyncio.sleep(0.2)
            window.begin()
            await stack.kill_worker(victim)
            window.end()
            killed_at = time.time()
            # Evidence that it died mid-batch: what it took in its last second, another worker received again.
            taken = {e.get("dedupe_key") for e in victim.events()
                     if e.get("event") == "change event received" and epoch(e) > killed_at - 1}
            await asyncio.sleep(3)  # a supervisor restarts it
            await stack.start_worker()
            again = {e.get("dedupe_key") for w in stack.workers if w is not victim for e in w.events()
                     if e.get("event") == "change event received" and epoch(e) > killed_at}
            window.note(f"killed {victim.name} 0.2 s after it received {received.get('mapping')} "
                        f"{received.get('record_id')} (a creation from Sales); {len(taken & again)} of the "
                        f"{len(taken)} events it had taken in its last second were received again by another worker")
            assert taken & again, "the kill interrupted nothing: the case proves nothing"
            await stack.bc.clear_faults()

        row = await run_case(stack, 2, "Worker killed (SIGKILL) mid-batch", kill, accepted_timeout=LEASED)
        row.notes.append(lease_waits(stack))
    fault_rows[row.case] = row
    check(row)


@pytest.mark.timeout(LEASED_TEST_TIMEOUT)
async def test_postgresql_restarted(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    reason = postgres.unavailable()
    if reason:
        pytest.skip(f"PostgreSQL restart case needs a private server: {reason}")
    server = postgres.PrivatePostgres()
    try:
        await asyncio.to_thread(server.init)
        async with Stack(tmp_path, workers=2, database_url=server.url, env=FAULT_ENV) as stack:

            async def restart(stack: Stack, window: Window) -> None:
                mark = len(stack.api_log_events("webhook answered"))
                window.begin()
                await asyncio.to_thread(server.stop, "immediate")
                await asyncio.sleep(3)
                await asyncio.to_thread(server.start)
                window.end()
                refused = [e for e in stack.api_log_events("webhook answered")[mark:] if e.get("status") == 503]
                window.note(f"PostgreSQL crashed (immediate stop), down 3 s, restarted in "
                            f"{window.ended - window.started - 3:.1f} s; the api answered {len(refused)} "
                            "webhooks 503 meanwhile")

            row = await run_case(stack, 3, "PostgreSQL restarted", restart, ask_catch_up=True, accepted_timeout=LEASED)
            row.notes.append(lease_waits(stack))
    finally:
        await asyncio.to_thread(server.close)
    fault_rows[row.case] = row
    check(row)


async def test_api_killed_right_after_answering_202(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    proxy = TcpProxy()
    await proxy.start()
    try:
        async with Stack(tmp_path, workers=2, env=FAULT_ENV, api_env={"BCSYNC_BROKER_URL": proxy.url}) as stack:

            async def kill(stack: Stack, window: Window) -> None:
                window.begin()
                proxy.cut()  # from now on what the api accepts waits in the outbox: the api cannot relay it
                seen = len(stack.api_log_events())
                answered: dict[str, Any] = await wait_for_log(
                    stack.api_log_events,
                    lambda e: e.get("event") == "webhook answered" and e.get("status") == 202 and bool(e.get("new")),
                    seen)
                await stack.kill_api()
                window.end()
                pending = outbox_pending(stack)
                after_ms = 1000 * (time.time() - datetime.fromisoformat(answered["timestamp"]).timestamp())
                window.note(f"api killed {after_ms:.0f} ms after it logged a 202 for {answered.get('new')} new "
                            f"{answered.get('source')} event(s); {pending} accepted events were unpublished in the "
                            "outbox at that moment")
                await asyncio.sleep(2)  # a supervisor restarts it
                proxy.restore()
                await stack.start_api()

            row = await run_case(stack, 4, "api killed (SIGKILL) right after answering 202", kill, ask_catch_up=True)
    finally:
        await proxy.close()
    fault_rows[row.case] = row
    check(row)


async def test_sandbox_429_storms_5xx_bursts_and_slow_answers(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    async with Stack(tmp_path, workers=2, env=FAULT_ENV) as stack:

        async def storms(stack: Stack, window: Window) -> None:
            await stack.bc.clear_requests()
            await stack.dv.clear_requests()
            window.begin()
            await stack.bc.faults(status=429, count=25, retry_after=1)
            await stack.dv.faults(status=429, count=25, retry_after=1)
            await asyncio.sleep(3)
            await stack.bc.faults(status=500, count=10)
            await stack.dv.faults(status=502, count=6)
            await stack.dv.faults(status=503, count=6)
            await asyncio.sleep(3)
            await stack.bc.faults(latency_ms=400)
            await stack.dv.faults(latency_ms=400)
            await asyncio.sleep(4)
            await stack.bc.clear_faults()
            await stack.dv.clear_faults()
            window.end()
            served: dict[str, int] = {}
            for system, log in (("BC", await stack.bc.requests()), ("Dataverse", await stack.dv.requests())):
                for request in log:
                    if request["status"] in (429, 500, 502, 503):
                        key = f"{system} {request['status']}"
                        served[key] = served.get(key, 0) + 1
            window.note("injected answers served: " + ", ".join(f"{k}: {v}" for k, v in sorted(served.items())))

        row = await run_case(stack, 5, "Sandbox 429 storms, 5xx bursts and slow answers", storms)
    fault_rows[row.case] = row
    check(row)


async def test_bc_subscription_deleted_by_bc(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    # The keeper looks every 6 s: long enough a gap for some changes to go unnotified, short enough for the suite.
    async with Stack(tmp_path, workers=2, env={**FAULT_ENV, "BCSYNC_KEEPER_MINUTES": "0.1"}) as stack:

        async def delete(stack: Stack, window: Window) -> None:
            # The keeper only keeps what it knows: one pass stores the registrations (setup made them).
            refreshed = await stack.admin("/admin/subscriptions/refresh", "POST")
            assert refreshed.status_code == 200, refreshed.text
            subscriptions = (await stack.bc.webhooks())["subscriptions"]
            doomed = [s for s in subscriptions if str(s.get("resource", "")).endswith(("/customers", "/items"))]
            assert len(doomed) == 2, subscriptions
            window.begin()
            for subscription in doomed:
                response = await stack.bc_as_service(
                    "DELETE", f"api/v2.0/subscriptions('{subscription['subscriptionId']}')",
                    headers={"If-Match": "*"})
                assert response.status_code == 204, response.text
            window.end()
            gone = {s["subscriptionId"] for s in doomed}

            async def recreated() -> bool:
                now = (await stack.bc.webhooks())["subscriptions"]
                fresh = [s for s in now if str(s.get("resource", "")).endswith(("/customers", "/items"))
                         and s["subscriptionId"] not in gone]
                return len(fresh) == 2

            await stack.wait_until(recreated, timeout=30, interval=0.2, message="subscriptions re-created")
            window.note(f"the keeper re-created both subscriptions {time.monotonic() - window.ended:.1f} s after "
                        "they were deleted")

        row = await run_case(stack, 6, "BC subscription deleted by BC", delete)
        catch_up = {m["mapping"]: m for m in (await stack.admin("/admin/catch-up")).json()["mappings"]}
        row.notes.append(f"catch-up runs: CUSTOMER {catch_up['CUSTOMER'].get('runs')}, ITEM-PRODUCT "
                         f"{catch_up['ITEM-PRODUCT'].get('runs')} (minutes setting "
                         f"{catch_up['CUSTOMER'].get('minutes')}: only the keeper asked for them)")
    fault_rows[row.case] = row
    check(row)
    assert row.not_notified > 0, "the deletion did not hide any change: the case proves nothing"


@pytest.mark.timeout(300)
async def test_webhooks_lost_healed_by_catch_up(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    async with Stack(tmp_path, workers=2, env={**FAULT_ENV, "BCSYNC_RECONCILE_MINUTES": "1"}) as stack:

        async def drop(stack: Stack, window: Window) -> None:
            window.begin()
            await stack.bc.faults(drop_webhooks=True)
            await stack.dv.faults(drop_webhooks=True)
            await asyncio.sleep(6)
            await stack.bc.faults(drop_webhooks=False)
            await stack.dv.clear_faults()
            window.end()
            dropped_dv = sum(1 for d in await stack.dv.webhooks() if d.get("outcome") == "dropped")
            dropped_bc = sum(1 for d in (await stack.bc.webhooks())["deliveries"] if d.get("outcome") == "dropped")
            window.note(f"dropped: {dropped_dv} Dataverse webhooks, {dropped_bc} BC notification posts")

        row = await run_case(stack, 7, "Webhooks lost (dropped deliveries), healed by catch-up", drop,
                             heal_timeout=120)
    fault_rows[row.case] = row
    check(row)
    assert row.not_notified > 0, "no change was hidden: the case proves nothing"
