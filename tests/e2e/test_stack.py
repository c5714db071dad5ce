"""The e2e harness itself: sandbox, api and worker processes wired over HTTP, without the sync engine."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.e2e.stack import Stack, StackFactory

pytestmark = pytest.mark.e2e


async def test_the_stack_starts_learns_the_integration_user_and_stops_cleanly(stack: Stack) -> None:
    ready = (await stack.http.get(f"{stack.api_url}/readyz")).json()
    assert ready["status"] == "ready"
    app_user = (await stack.dv.state())["application_user_id"]
    assert stack.api is not None
    learned = await stack.api.wait_for_log("integration user learned from WhoAmI", timeout=10)
    assert learned["user_id"] == app_user.lower()
    assert (await stack.admin("status")).status_code == 200
    assert [w.name for w in stack.running_workers] == ["worker-1"]
    codes = await stack.stop()
    # uvicorn re-raises the SIGTERM it handled once the graceful shutdown is done: -15 is a clean stop.
    assert codes == {"worker-1": 0, "api-1": -signal.SIGTERM, "sandbox-1": 0}
    assert stack.api_log_events("Application shutdown complete.")
    assert stack.worker_log_events("worker stopped")


async def test_a_human_account_in_dataverse_reaches_the_worker(stack: Stack) -> None:
    registered = await stack.register_webhooks()
    # Every BC resource whose changes matter and that BC can notify (the sandbox, by default, does not list
    # contacts: CONTACT's BC side is polled; SALESPEOPLE needs no BC changes), in the documented form.
    created = registered["bc_subscriptions"]["created"]
    assert len(created) == 9 and all(r.startswith("/api/") for r in created), created
    assert registered["mappings"]["CONTACT"]["bc_delivery"] == "poll" and registered["check"]["ok"]
    assert {f"step {m} of {t}" for t in ("account", "uom", "invoicedetail") for m in ("Create", "Update", "Delete")} \
        <= set(registered["dataverse_webhook"]["created"])
    account = await stack.dv.create("accounts", {"name": "Fabrikam Bikes", "customertypecode": 3})
    [event] = await stack.wait_until(lambda: stack.change_events("CUSTOMER", account), timeout=10)
    assert event["source"] == "dataverse" and event["entity"] == "account"


async def test_a_human_customer_in_business_central_reaches_the_worker(stack: Stack) -> None:
    await stack.register_webhooks()
    customer = await stack.bc.create("customers", {"displayName": "Contoso Cycles"})
    events = await stack.wait_until(lambda: stack.change_events("CUSTOMER", customer["id"]), timeout=10)
    assert events[0]["source"] == "business_central" and events[0]["entity"] == "customers"


async def test_the_integrations_own_dataverse_write_is_ignored_at_the_door(stack: Stack) -> None:
    await stack.register_webhooks()
    ignored = 'bcsync_webhook_requests_total'
    before = await stack.metric(ignored, source="dataverse", outcome="ignored")
    mark = await stack.mark_writes()
    own = await stack.dv_as_service("POST", "accounts", params={"tag": await stack.integration_tag()},
                                    json={"name": "Echo Ltd"})
    own_id = own.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    await stack.dv.drain()
    assert await stack.metric(ignored, source="dataverse", outcome="ignored") == before + 1
    assert [w["method"] for w in await stack.dv_writes_since(mark)] == ["POST"]
    assert await stack.bc_writes_since(mark) == []
    # A human's change made after it gets through; the integration's own never reaches a worker.
    sentinel = await stack.dv.create("accounts", {"name": "Human Ltd"})
    await stack.wait_until(lambda: stack.change_events("CUSTOMER", sentinel), timeout=10)
    assert stack.change_events(record_id=own_id) == []


async def test_an_event_accepted_while_no_worker_runs_is_processed_by_the_next_one(stack: Stack) -> None:
    await stack.register_webhooks()
    assert await stack.kill_worker() == -9
    accepted = await stack.metric("bcsync_webhook_requests_total", source="dataverse", outcome="accepted")
    account = await stack.dv.create("accounts", {"name": "While Nobody Listens"})
    await stack.dv.drain()
    assert await stack.metric("bcsync_webhook_requests_total", source="dataverse", outcome="accepted") == accepted + 1
    assert stack.change_events(record_id=account) == []
    worker = await stack.start_worker()
    [event] = await stack.wait_until(lambda: stack.change_events("CUSTOMER", account), timeout=10)
    assert event["process"] == worker.name == "worker-2"


@pytest.mark.postgres
async def test_two_workers_on_postgresql_and_an_api_restart(make_stack: StackFactory, postgres_url: str) -> None:
    stack = await make_stack(database_url=postgres_url, workers=2)
    assert [w.name for w in stack.running_workers] == ["worker-1", "worker-2"]
    await stack.register_webhooks()
    assert await stack.stop_api() == -signal.SIGTERM
    await stack.start_api()  # same port: the registered webhooks still reach it
    customer = await stack.bc.create("customers", {"displayName": "Restarted Ltd"})
    account = await stack.dv.create("accounts", {"name": "Restarted Inc"})
    await stack.wait_until(lambda: stack.change_events("CUSTOMER", customer["id"])
                           and stack.change_events("CUSTOMER", account), timeout=10)
    assert [e["event"] for e in stack.api_log_events() if e["event"] == "api started"] == ["api started"] * 2


async def test_a_worker_answers_health_readiness_and_metrics_on_its_own_port(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=0)
    worker = await stack.start_metered_worker()
    base = f"http://127.0.0.1:{stack.__dict__['_worker_metrics_ports'][worker.name]}"

    async def ready() -> bool:
        try:
            return (await stack.http.get(f"{base}/readyz")).status_code == 200
        except httpx.TransportError:  # not listening yet
            return False

    await stack.wait_until(ready, timeout=20, message="the worker's /readyz")
    body = (await stack.http.get(f"{base}/readyz")).json()
    assert body == {"status": "ready", "checks": {"database": {"ok": True}, "broker": {"ok": True}}}
    assert (await stack.http.get(f"{base}/healthz")).json() == {"status": "ok"}
    metrics = await stack.http.get(f"{base}/metrics")
    assert metrics.status_code == 200 and "# TYPE bcsync_sync_records_total counter" in metrics.text
    # The server runs on the worker's loop but leaves SIGTERM to the worker: a clean stop, as before.
    assert await worker.stop() == 0
    assert stack.worker_log_events("worker stopped")
