"""The jobs through the admin API against real processes: full synchronization (review, start, 409,
restart of a line stuck after its worker was killed), catch-up healing dropped webhooks, the subscription
keeper renewing with a compressed clock and re-creating deleted subscriptions."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from sandbox.dataverse.identity import DEFAULT_UNIT_GROUP_ID, DEFAULT_UNIT_ID
from service.store import jobs
from tests.e2e.stack import Stack, StackFactory

pytestmark = pytest.mark.e2e
FAST = {"BCSYNC_JOBS_POLL_SECONDS": "0.5"}


async def full_sync(stack: Stack) -> dict[str, Any]:
    response = await stack.admin("/admin/full-sync?review_lines=false")
    assert response.status_code == 200, response.text
    return response.json()


async def run_status(stack: Stack, status: str) -> dict[str, Any] | None:
    run = (await full_sync(stack))["run"]
    return run if run and run["status"] == status else None


def line(run: dict[str, Any], mapping: str) -> dict[str, Any]:
    return next(x for x in run["lines"] if x["mapping"] == mapping)


async def unique_customers(stack: Stack, count: int) -> list[dict[str, Any]]:
    await stack.bc.seed(customers=count, items=0, salespeople=0, contactsPerCustomer=0)
    customers = await stack.bc.query("customers", top=10_000)
    await asyncio.gather(*(stack.bc.patch("customers", c["id"], {"displayName": f"{c['displayName']} {c['number']}"})
                           for c in customers))
    return await stack.bc.query("customers", top=10_000)


async def test_job_endpoints_need_the_token_and_validate_their_input(stack: Stack) -> None:
    endpoints = (("GET", "/admin/full-sync"), ("POST", "/admin/full-sync"), ("DELETE", "/admin/full-sync/lines/CUSTOMER"),
                 ("GET", "/admin/subscriptions"), ("POST", "/admin/subscriptions/refresh"),
                 ("GET", "/admin/catch-up"), ("POST", "/admin/catch-up"))
    for method, path in endpoints:
        response = await stack.http.request(method, f"{stack.api_url}{path}")
        assert response.status_code == 401, (path, response.status_code)
        wrong = await stack.http.request(method, f"{stack.api_url}{path}", headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
    for body in ("{", "[1]", '{"mappings": "CUSTOMER"}', '{"mappings": []}', '{"mappings": [1]}', '{"other": 1}'):
        for path in ("/admin/full-sync", "/admin/catch-up"):
            response = await stack.admin(path, "POST", content=body)
            assert response.status_code == 400, (path, body, response.text)
            assert response.json()["detail"]
    documents = await stack.admin("/admin/full-sync", "POST", json={"mappings": ["SALESORDER-ORDER"]})
    assert documents.status_code == 400 and "covers" in documents.json()["detail"]
    unknown = await stack.admin("/admin/full-sync", "POST", json={"mappings": ["NOPE"]})
    assert unknown.status_code == 404 and "NOPE" in unknown.json()["detail"]
    assert (await stack.admin("/admin/catch-up", "POST", json={"mappings": ["NOPE"]})).status_code == 404
    assert (await stack.admin("/admin/full-sync/lines/NOPE", "DELETE")).status_code == 404
    assert (await stack.admin("/admin/full-sync/lines/CUSTOMER", "DELETE")).status_code == 404  # no run yet
    assert (await stack.admin("/admin/subscriptions")).json() == {"bc": [], "dataverse": []}


async def test_full_sync_reviews_runs_in_dependency_order_and_couples_what_exists(make_stack: StackFactory) -> None:
    stack = await make_stack(env=FAST)
    customers = await unique_customers(stack, 60)
    await stack.bc.seed(customers=0, items=40, salespeople=0)
    await stack.dv.seed(users=2)
    items = await stack.bc.query("items", top=10_000)
    for customer in customers[:20]:  # already in Sales: coupled, not copied
        await stack.dv.create("accounts", {"name": customer["displayName"], "accountnumber": customer["number"],
                                           "customertypecode": 3})
    for item in items[:10]:
        await stack.dv.create("products", {
            "name": item["displayName"], "productnumber": item["number"],
            "defaultuomscheduleid@odata.bind": f"/uomschedules({DEFAULT_UNIT_GROUP_ID})",
            "defaultuomid@odata.bind": f"/uoms({DEFAULT_UNIT_ID})"})

    review = {r["mapping"]: r for r in (await stack.admin("/admin/full-sync")).json()["review"]}
    assert set(list(review)[:3]) == {"SALESPEOPLE", "CURRENCY", "UNITOFMEASURE"}  # dependency order
    assert review["CUSTOMER"]["bc_records"] == 60 and review["CUSTOMER"]["dataverse_records"] == 20
    assert review["CUSTOMER"]["recommendation"] == "Couple records"
    assert review["CONTACT"]["recommendation"] == "No records"  # no persons on either side
    assert review["SALESPEOPLE"]["recommendation"] == "Full Synch."  # users in Sales, no salesperson in BC

    started = await stack.admin("/admin/full-sync", "POST")
    assert started.status_code == 202, started.text
    assert [x["status"] for x in started.json()["run"]["lines"]] == ["Ready"] * len(jobs.full_sync_mappings())
    again = await stack.admin("/admin/full-sync", "POST")
    assert again.status_code == 409 and "in progress" in again.json()["detail"]

    run = await stack.wait_until(lambda: run_status(stack, "finished"), timeout=120, interval=0.5,
                                 message="the full synchronization finished")
    assert all(x["status"] == "Finished" for x in run["lines"])
    customer_line, item_line = line(run, "CUSTOMER"), line(run, "ITEM-PRODUCT")
    assert customer_line["counts"]["coupled"] == 20 and customer_line["counts"]["inserted"] == 40, customer_line
    assert customer_line["counts"]["failed"] == 0
    assert item_line["counts"]["coupled"] == 10 and item_line["counts"]["inserted"] == 30, item_line
    assert line(run, "UNITOFMEASURE")["finished_at"] <= item_line["started_at"]
    assert line(run, "SALESPEOPLE")["finished_at"] <= customer_line["started_at"]
    assert line(run, "CURRENCY")["finished_at"] <= customer_line["started_at"]
    accounts = await stack.dv.query("accounts", select="accountnumber")
    numbers = [a["accountnumber"] for a in accounts if a.get("accountnumber")]
    assert sorted(numbers) == sorted(c["number"] for c in customers)  # each once: no duplicate
    finished = await stack.admin("/admin/full-sync/lines/CUSTOMER", "DELETE")
    assert finished.status_code == 409 and "Finished" in finished.json()["detail"]


async def test_a_line_stuck_after_its_worker_died_is_restarted_and_finishes(make_stack: StackFactory) -> None:
    env = {**FAST, "BCSYNC_LINE_LEASE_SECONDS": "2", "BCSYNC_FULL_SYNC_BATCH": "5", "BCSYNC_FULL_SYNC_CONCURRENCY": "2"}
    stack = await make_stack(env=env)
    customers = await unique_customers(stack, 150)
    await stack.dv.faults(latency_ms=20)
    assert (await stack.admin("/admin/full-sync", "POST", json={"mappings": ["CURRENCY", "CUSTOMER"]})).status_code == 202

    async def customer_running() -> bool:
        run = (await full_sync(stack))["run"]
        current = line(run, "CUSTOMER")
        return current["status"] == "In Progress" and sum(current["counts"].values()) >= 10

    await stack.wait_until(customer_running, timeout=60, interval=0.2)
    await stack.kill_worker()

    async def stuck() -> bool:
        return bool(line((await full_sync(stack))["run"], "CUSTOMER")["stuck"])

    await stack.wait_until(stuck, timeout=15, interval=0.3)
    await stack.start_worker()
    await asyncio.sleep(2)
    assert line((await full_sync(stack))["run"], "CUSTOMER")["status"] == "In Progress"  # nobody takes it silently
    await stack.dv.clear_faults()
    restarted = await stack.admin("/admin/full-sync/lines/CUSTOMER", "DELETE")
    assert restarted.status_code == 200, restarted.text
    assert line(restarted.json()["run"], "CUSTOMER")["status"] == "Ready"
    run = await stack.wait_until(lambda: run_status(stack, "finished"), timeout=120, interval=0.5,
                                 message="the restarted line finished")
    counts = line(run, "CUSTOMER")["counts"]
    total = counts["inserted"] + counts["unchanged"] + counts["coupled"] + counts["failed"]
    assert 300 - counts["failed"] <= total <= 300, counts  # 150 per side; a failed BC record has no account yet
    # Records the killed worker held keep its record lease (2 minutes): those few are listed, not lost.
    errors = (await stack.admin("/admin/errors?mapping=CUSTOMER")).json()
    assert counts["failed"] <= 2 and len(errors) == counts["failed"], (counts, errors)
    assert all("RecordBusy" in e["message"] for e in errors), errors
    accounts = await stack.dv.query("accounts", select="accountnumber")
    numbers = Counter(a["accountnumber"] for a in accounts if a.get("accountnumber"))
    assert max(numbers.values()) == 1 and len(numbers) >= 150 - counts["failed"]  # nothing twice
    assert customers


async def wait_account(stack: Stack, number: str, **values: Any) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        rows = await stack.dv.query("accounts", f"accountnumber eq '{number}'")
        return rows[0] if rows and all(rows[0].get(k) == v for k, v in values.items()) else None

    return await stack.wait_until(found, timeout=30, interval=0.3, message=f"account {number} with {values}")


async def test_catch_up_heals_changes_whose_webhooks_were_dropped(make_stack: StackFactory) -> None:
    stack = await make_stack(env=FAST)
    await stack.register_webhooks()
    customer = await stack.bc.create("customers", {"displayName": "Catch Up Ltd"})
    other = await stack.bc.create("customers", {"displayName": "Catch Up Two Ltd"})
    await wait_account(stack, customer["number"])
    account = await wait_account(stack, other["number"])
    await stack.bc.faults(drop_webhooks=True)
    await stack.dv.faults(drop_webhooks=True)
    # one change on each side (different records: the same record changed on both sides is a conflict)
    await stack.bc.patch("customers", customer["id"], {"phoneNumber": "+1 425 555 0101"})
    await stack.dv.update("accounts", account["accountid"], {"websiteurl": "https://catchup.example"})
    await stack.bc.flush()
    await asyncio.sleep(2)
    assert (await stack.bc.get("customers", other["id"])).get("website") != "https://catchup.example"
    requested = await stack.admin("/admin/catch-up", "POST", json={"mappings": ["CUSTOMER"]})
    assert requested.status_code == 202 and requested.json()["requested"] == ["CUSTOMER"]
    await wait_account(stack, customer["number"], telephone1="+1 425 555 0101")

    async def website_in_bc() -> bool:
        return (await stack.bc.get("customers", other["id"])).get("website") == "https://catchup.example"

    await stack.wait_until(website_in_bc, timeout=30, interval=0.3)
    state = {m["mapping"]: m for m in (await stack.admin("/admin/catch-up")).json()["mappings"]}["CUSTOMER"]
    assert state["runs"] >= 1 and state["bc_watermark"] and state["dataverse_watermark"] and not state["last_error"]
    assert state["minutes"] == 0  # BCSYNC_RECONCILE_MINUTES=0 in the stack: only on request


async def test_keeper_renews_with_a_compressed_clock_and_recreates_deleted_subscriptions(
        make_stack: StackFactory) -> None:
    stack = await make_stack(env={**FAST, "BCSYNC_KEEPER_MINUTES": "0.05"})
    await stack.bc.time(time_factor=0.0001)  # a 3-day subscription lives 26 s
    customer = await stack.bc.create("customers", {"displayName": "Keeper Ltd"})
    refreshed = await stack.admin("/admin/subscriptions/refresh", "POST")
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    # Before setup ran, the keeper subscribes to every BC side that matters; the sandbox (by default) refuses
    # contacts, as Microsoft's list of webhook-capable resources does not name them: that one is polled instead.
    created = [s for s in body["bc"] if s["status"] == "created"]
    assert len(created) >= 8 and [s["resource"] for s in body["bc"] if s["status"] != "created"] == [
        f"companies({stack.company_id})/contacts"], body["bc"]
    status = {m["name"]: m for m in (await stack.admin("status")).json()["mappings"]}
    assert status["CONTACT"]["bc_delivery"] == "poll"
    assert body["dataverse"][0]["status"] == "created"
    await stack.bc.patch("customers", customer["id"], {"phoneNumber": "+1 425 555 0199"})  # flows by webhook now
    await stack.bc.flush()
    account = await stack.wait_until(lambda: stack.dv.query("accounts", f"accountnumber eq '{customer['number']}'"),
                                     timeout=30)
    first_expiry = {s["resource"]: s["expires_at"] for s in body["bc"] if s["status"] == "created"}

    async def renewed() -> bool:
        states = (await stack.admin("/admin/subscriptions")).json()["bc"]  # contacts, now polled, is gone
        return sorted(s["resource"] for s in states) == sorted(first_expiry) and all(
            s["expires_at"] and s["expires_at"] > first_expiry[s["resource"]] for s in states)

    await stack.wait_until(renewed, timeout=30, interval=0.5, message="every subscription renewed")
    await asyncio.sleep(35)  # longer than a subscription lives: the keeper keeps them alive
    alive = (await stack.bc.webhooks())["subscriptions"]
    assert len(alive) >= 8

    # The sandbox deletes every subscription (its clock jumps past their expiry); a change made meanwhile
    # is notified to nobody.
    await stack.bc.time(advance_seconds=4 * 86400)
    await stack.wait_until(lambda: _no_subscriptions(stack), timeout=10)
    await stack.bc.patch("customers", customer["id"], {"displayName": "Keeper Renamed Ltd"})

    async def recreated() -> bool:
        return len((await stack.bc.webhooks())["subscriptions"]) >= 8

    await stack.wait_until(recreated, timeout=30, interval=0.5, message="subscriptions re-created by the keeper")
    await wait_account(stack, customer["number"], name="Keeper Renamed Ltd")
    assert account
    catch_up = {m["mapping"]: m for m in (await stack.admin("/admin/catch-up")).json()["mappings"]}
    assert catch_up["CUSTOMER"]["runs"] >= 1


async def _no_subscriptions(stack: Stack) -> bool:
    return not (await stack.bc.webhooks())["subscriptions"]


@pytest.mark.postgres
async def test_full_sync_with_two_workers_on_postgresql(make_stack: StackFactory, postgres_url: str) -> None:
    stack = await make_stack(workers=2, database_url=postgres_url, env=FAST)
    customers = await unique_customers(stack, 80)
    await stack.bc.seed(customers=0, items=40, salespeople=0)
    for customer in customers[:30]:
        await stack.dv.create("accounts", {"name": customer["displayName"], "accountnumber": customer["number"],
                                           "customertypecode": 3})
    assert (await stack.admin("/admin/full-sync", "POST")).status_code == 202
    run = await stack.wait_until(lambda: run_status(stack, "finished"), timeout=120, interval=0.5,
                                 message="the full synchronization finished")
    assert line(run, "CUSTOMER")["counts"]["coupled"] == 30 and line(run, "CUSTOMER")["counts"]["inserted"] == 50
    assert line(run, "ITEM-PRODUCT")["counts"]["inserted"] == 40
    accounts = await stack.dv.query("accounts", select="accountnumber")
    numbers = [a["accountnumber"] for a in accounts if a.get("accountnumber")]
    assert sorted(numbers) == sorted(c["number"] for c in customers)
    products = await stack.dv.query("products", select="productnumber")
    assert len(products) == len({p["productnumber"] for p in products}) == 40
