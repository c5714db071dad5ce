"""Issue 7: the fault-injection suite. Each case runs the real processes under a steady load of changes on
both sides, injects one fault, and checks after the recovery that every change arrived with its final values,
nothing was duplicated and nothing was dead-lettered (tests/faults/scenario.py has the timeline and the
checks, docs/reliability.md the figures).

Run with `make test-faults` or `pytest tests/faults` (not part of `make test`: it takes minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.assembly import SETTINGS_REFRESH_SECONDS
from consumers.lease import LEASE_SECONDS
from tests.e2e.stack import Stack
from tests.faults import postgres
from tests.faults.load import Load, Record
from tests.faults.scenario import (
    FAULT_ENV,
    CouplingWatch,
    Row,
    Window,
    bc_notification,
    bc_subscription_ids,
    census_note,
    forged_dataverse_delete,
    integrity,
    post_bc,
    post_dataverse,
    run_case,
    wait_for_log,
)
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


def check_setbacks(row: Row, load: Load | None) -> None:
    """Cases that watch both sides (`observe`): no value may ever have been set back, even for a while."""
    assert load is not None and load.looks, "nothing was observed"
    assert not load.setbacks, "\n".join(row.notes)


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


async def reconcile_jobs(stack: Stack) -> list[dict[str, Any]]:
    listed = await stack.admin("/admin/reconciles?limit=500")
    assert listed.status_code == 200, listed.text
    return list(listed.json()["jobs"])


@pytest.mark.timeout(240)
async def test_reconciles_while_records_are_created(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    # Every catch-up run also reconciles everything (BCSYNC_FULL_RECONCILE_EVERY=1): `POST /admin/catch-up` is
    # then the operator's way to start full reconciliations of every mapping, on both sides.
    env = {**FAULT_ENV, "BCSYNC_FULL_RECONCILE_EVERY": "1"}
    watch = CouplingWatch()
    window = Window()
    async with Stack(tmp_path, workers=2, env=env) as stack:
        known: set[int] = set()

        async def reconcile(stack: Stack, window: Window) -> None:
            load = window.load
            assert load is not None
            subscriptions = await bc_subscription_ids(stack)
            known.update(j["id"] for j in await reconcile_jobs(stack))
            asked = {"catch-up": 0, "BC collection": 0}
            # Both systems answer in 100 ms, as the cloud does (the sandbox alone answers in about 1 ms, and a
            # reconciliation would be over before anything changed under it).
            await stack.bc.faults(latency_ms=100)
            await stack.dv.faults(latency_ms=100)
            window.begin()
            for turn in range(10):
                await watch.look(load)
                if turn % 2 == 0:
                    requested = await stack.admin("/admin/catch-up", "POST")
                    assert requested.status_code == 202, requested.text
                    asked["catch-up"] += 1
                else:  # what BC sends when too many changes pile up, or after deletes: read everything
                    entries = [bc_notification(subscriptions[s], stack.company_id, s, None, "collection")
                               for s in ("customers", "items")]
                    answer = await post_bc(stack, entries)
                    assert answer.status_code == 202, answer.text
                    asked["BC collection"] += 1
                await asyncio.sleep(1.5)
            window.end()
            await stack.bc.clear_faults()
            await stack.dv.clear_faults()
            during = [j for j in await reconcile_jobs(stack) if j["id"] not in known]
            started = [j for j in during if j["started_at"]]
            window.note(f"over {window.ended - window.started:.0f} s: {asked['catch-up']} catch-ups requested "
                        f"(each also reconciling every mapping fully, on both sides) and {asked['BC collection']} "
                        f"unfiltered BC collection notifications posted (customers, items); {len(during)} "
                        f"reconciliation jobs stored, {len(started)} started while the load created and edited "
                        f"records, listing {sum(j['listed'] for j in started)} records so far")

        row = await run_case(stack, 10, "Full reconciliations running while records are created", reconcile,
                             window=window, observe=True)
        load = window.load
        assert load is not None

        async def reconciles_done() -> bool:
            return all(j["status"] in ("finished", "failed") for j in await reconcile_jobs(stack))

        with contextlib.suppress(AssertionError):
            await stack.wait_until(reconciles_done, timeout=60, interval=0.5, message="reconciliations ended")
        jobs = [j for j in await reconcile_jobs(stack) if j["id"] not in known]
        states = Counter(j["status"] for j in jobs)
        full = [j for j in jobs if j["full"]]
        row.notes.append(f"reconciliation jobs of the case (GET /admin/reconciles): {len(jobs)}, "
                         f"{dict(sorted(states.items()))}; {len(full)} full, listing {sum(j['listed'] for j in jobs)} "
                         f"records and checking {sum(j['checked'] for j in jobs)} couplings their listing did not "
                         f"show; records failed in them: {sum(j['failed'] for j in jobs)}")
        row.notes.append(census_note(await load.census()))
        problems = await integrity(stack, load, watch)
        row.notes += problems
    fault_rows[row.case] = row
    check(row)
    check_setbacks(row, load)
    assert not problems, "\n".join(problems)
    assert jobs and states == Counter({"finished": len(jobs)}), f"reconciliation jobs: {dict(states)}"
    assert any(j["full"] and j["listed"] for j in jobs), "no full reconciliation listed anything"


# The mappings of the load's records, made to delete the other side's record when one side's is deleted.
PROPAGATING = ("CUSTOMER", "CONTACT", "ITEM-PRODUCT")
DV_TABLE = {"account": "account", "customer": "account", "contact": "contact", "item": "product"}


async def set_delete_policy(stack: Stack, mapping: str, policy: str) -> None:
    """As an operator does it: hold the mapping, change it, resume it."""
    for method, path, body in (("POST", f"/admin/mappings/{mapping}/hold", None),
                               ("PATCH", f"/admin/mappings/{mapping}", {"delete_policy": policy}),
                               ("POST", f"/admin/mappings/{mapping}/resume", None)):
        answer = await stack.admin(path, method, json=body)
        assert answer.status_code == 200, answer.text
    shown = (await stack.admin(f"/admin/mappings/{mapping}")).json()
    assert shown["delete_policy"] == policy and not shown["on_hold"], shown


@pytest.mark.timeout(240)
async def test_forged_deletes_of_existing_records(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    watch = CouplingWatch()
    window = Window()
    async with Stack(tmp_path, workers=2, env=FAULT_ENV) as stack:
        for mapping in PROPAGATING:
            await set_delete_policy(stack, mapping, "propagate")
        forged: dict[str, Record] = {}

        async def forge(stack: Stack, window: Window) -> None:
            load = window.load
            assert load is not None
            await asyncio.sleep(SETTINGS_REFRESH_SECONDS)  # every worker has read the policy by now
            for mapping in PROPAGATING:  # (setup, run since, leaves an operator's settings alone)
                assert (await stack.admin(f"/admin/mappings/{mapping}")).json()["delete_policy"] == "propagate"
            subscriptions = await bc_subscription_ids(stack)
            answers: Counter[str] = Counter()
            window.begin()
            for _ in range(3):
                coupled = await load.couplings()
                await watch.look(load)
                pairs = {str(c[side]).lower(): c for rows in coupled.values() for c in rows
                         for side in ("bc_id", "dataverse_id")}
                entries = []
                for record in list(load.records):
                    coupling = pairs.get(record.source_id)
                    if coupling is None:
                        continue
                    forged[record.key] = record
                    bc_id, dv_id = str(coupling["bc_id"]), str(coupling["dataverse_id"])
                    answer = await post_dataverse(stack, forged_dataverse_delete(DV_TABLE[record.kind.name], dv_id))
                    answers[f"Dataverse Delete {answer.status_code}"] += 1
                    bc_set = record.kind.bc_set
                    entries.append(bc_notification(subscriptions.get(bc_set, next(iter(subscriptions.values()))),
                                                   stack.company_id, bc_set, bc_id, "deleted"))
                answer = await post_bc(stack, entries)  # one POST, as BC sends them
                answers[f"BC batch of {len(entries)} deleted {answer.status_code}"] += 1
                await asyncio.sleep(2)
            window.end()
            window.note(f"forged while the load ran, 3 rounds over {window.ended - window.started:.0f} s: a Dataverse "
                        "Delete message and a BC `deleted` notification for every coupled record of the load "
                        f"({len(forged)} records, both of their sides); the api answered "
                        + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
            assert all(k.endswith("202") for k in answers), answers
            refused = []
            for record in forged.values():  # later edits of those records must still arrive
                try:
                    await load.touch(record)
                except AssertionError as exc:  # the sandbox refused: the record is gone from its source
                    refused.append(f"{record.key}: {str(exc)[:160]}")
            window.note(f"then each of the {len(forged)} records was edited once more at its source"
                        + (f"; {len(refused)} edits refused: {refused[:3]}" if refused else ""))

        row = await run_case(stack, 11, "Forged deletes of existing records, delete policy propagate", forge,
                             window=window, observe=True)
        load = window.load
        assert load is not None
        claims = stack.worker_log_events("a delete notice for a record that exists: applied as a change")
        row.notes.append(f"{len(claims)} delete notices found the record still at its source and were applied as "
                         "a change; the policy was never asked")
        row.notes.append(census_note(await load.census()))
        problems = await integrity(stack, load, watch)
        row.notes += problems
    fault_rows[row.case] = row
    check(row)
    check_setbacks(row, load)
    assert not problems, "\n".join(problems)
    assert forged and claims, "no forged delete reached the engine: the case proves nothing"


OUTAGE = 45.0  # seconds: longer than the whole compressed retry schedule (1+2+4+8+15 = 30 s)
# With `Retry-After: 0` a run's six attempts take no time, so the schedule is what it says (with jittered back-off
# between attempts a run lasted about 10 s under this load, and the schedule over a minute). Those instant
# attempts would spend the client-side request budget (6,000 per 5 min, shared by the workers) within the
# outage, and the workers would then wait for the window to slide before they apply anything: raised here.
OUTAGE_ENV = {**FAULT_ENV, "BCSYNC_BC_REQUEST_BUDGET": "30000"}


@pytest.mark.timeout(300)
async def test_destination_down_longer_than_the_retry_schedule(tmp_path: Path, fault_rows: dict[int, Row]) -> None:
    window = Window()
    async with Stack(tmp_path, workers=2, env=OUTAGE_ENV) as stack:

        async def outage(stack: Stack, window: Window) -> None:
            await stack.bc.clear_requests()
            seen = len(stack.worker_log_events())
            window.begin()
            # Every API request answers 503 until cleared, with `Retry-After: 0` (see OUTAGE_ENV).
            await stack.bc.faults(status=503, count=10**9, retry_after=0)
            await asyncio.sleep(OUTAGE)
            await stack.bc.clear_faults()
            window.end()
            served = Counter(r["status"] for r in await stack.bc.requests())
            waits = [e for e in stack.worker_log_events()[seen:] if e.get("event") == "event failed transiently; waiting"]
            longest = max((int(e.get("waits", 0)) for e in waits), default=0)
            window.note(f"BC answered every API request 503 for {window.ended - window.started:.0f} s "
                        f"({served.get(503, 0)} requests); the workers sent events round the delay queues "
                        f"{len(waits)} times without spending retries, one event up to {longest} times in a row")
            assert served.get(503), "no request met the outage: the case proves nothing"

        row = await run_case(stack, 12, "Destination (BC) down longer than the whole retry schedule", outage,
                             window=window, observe=True)
    fault_rows[row.case] = row
    check(row)
    check_setbacks(row, window.load)
