"""Operating the integration through the admin API and the CLI, against real processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e
ALEX = "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=stack.env, capture_output=True,
                          text=True, timeout=120, cwd=stack.dir)


async def customers_named(stack: Stack, name: str) -> list[dict]:
    return await stack.bc.query("customers", f"displayName eq '{name}'")


async def test_setup_from_nothing_then_changes_flow_and_setup_again_changes_nothing(stack: Stack) -> None:
    first = cli(stack, "setup")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout[: first.stdout.rindex("}") + 1])
    assert report["integration_user"]["application_user"] is True
    assert report["mappings_seeded"] == 11 and len(report["bc_subscriptions"]["created"]) >= 8
    assert report["dataverse_webhook"]["created"] and report["changed"] is True
    # a change on either side flows without any other step
    account = await stack.dv.create("accounts", {"name": "Setup Flow Ltd", "customertypecode": 3})
    assert await stack.wait_until(lambda: customers_named(stack, "Setup Flow Ltd"), timeout=30)
    customer = await stack.bc.create("customers", {"displayName": "From BC After Setup"})
    assert await stack.wait_until(
        lambda: stack.dv.query("accounts", f"accountnumber eq '{customer['number']}'"), timeout=30)
    # the api's /metrics shows what every worker synchronized (from the store's job log)

    async def counted() -> float:
        return await stack.metric("bcsync_sync_records_total", mapping="CUSTOMER", direction="from_crm",
                                  result="inserted")

    assert await stack.wait_until(counted, timeout=15) >= 1
    second = cli(stack, "setup")
    assert second.returncode == 0, second.stderr
    assert "setup changed nothing" in second.stdout
    again = (await stack.admin("/admin/setup", "POST")).json()
    assert again["changed"] is False and not again["bc_subscriptions"]["created"]
    assert account


async def test_admin_calls_need_the_token_and_inputs_are_validated(stack: Stack) -> None:
    for method, path in (("GET", "/admin/mappings"), ("POST", "/admin/mappings/CUSTOMER/hold"),
                         ("GET", "/admin/errors"), ("POST", "/admin/couplings/match")):
        response = await stack.http.request(method, f"{stack.api_url}{path}")
        assert response.status_code == 401, (path, response.status_code)
        wrong = await stack.http.request(method, f"{stack.api_url}{path}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    assert any(e.get("path") == "/admin/mappings" for e in stack.api_log_events("admin request refused"))
    assert (await stack.admin("/admin/mappings/NOPE")).status_code == 404
    assert (await stack.admin("/admin/couplings", "POST", json={"mapping": "CUSTOMER", "bc_id": "x",
                                                                "dataverse_id": "y"})).status_code == 400
    assert (await stack.admin("/admin/couplings?mapping=CUSTOMER&limit=0")).status_code == 400
    assert (await stack.admin("/admin/couplings/999999", "DELETE")).status_code == 404
    assert (await stack.admin("/admin/errors/999999/retry", "POST")).status_code == 404
    refused = await stack.admin("/admin/sync-log?kind=weekly")
    assert refused.status_code == 400 and "kind" in refused.json()["detail"]
    assert any(e.get("status") == 400 for e in stack.api_log_events("request refused"))


async def test_mappings_change_only_on_hold_validated_and_versioned(stack: Stack) -> None:
    await stack.register_webhooks()
    listed = (await stack.admin("/admin/mappings")).json()
    assert [m["name"] for m in listed][:4] == ["SALESPEOPLE", "CURRENCY", "UNITOFMEASURE", "CUSTOMER"]
    change = {"fields": [{"bc": "phoneNumber", "dataverse": "telephone1", "enabled": False}]}
    refused = await stack.admin("/admin/mappings/CUSTOMER", "PATCH", json=change)
    assert refused.status_code == 409 and "hold" in refused.json()["detail"]
    assert (await stack.admin("/admin/mappings/CUSTOMER/hold", "POST")).json()["on_hold"] is True
    for bad in ({"direction": "sideways"}, {"bc_filter": "blocked eq"}, {"depends_on": ["CONTACT"]},
                {"fields": [{"bc": "nope", "dataverse": "nope", "enabled": False}]}, {"unknown": 1}):
        response = await stack.admin("/admin/mappings/CUSTOMER", "PATCH", json=bad)
        assert response.status_code == 400, (bad, response.text)
    direction = await stack.admin("/admin/mappings/SALESPEOPLE/hold", "POST")
    assert direction.status_code == 200
    cannot = await stack.admin("/admin/mappings/SALESPEOPLE", "PATCH", json={"direction": "to_crm"})
    assert cannot.status_code == 400 and "supports" in cannot.json()["detail"]
    changed = await stack.admin("/admin/mappings/CUSTOMER", "PATCH", json=change)
    assert changed.status_code == 200, changed.text
    shown = (await stack.admin("/admin/mappings/CUSTOMER")).json()
    assert shown["version"] == 2 and len(shown["history"]) == 1
    phone = next(f for f in shown["fields"] if f["bc"] == "phoneNumber")
    assert phone["enabled"] is False
    await stack.admin("/admin/mappings/all/resume", "POST")
    await asyncio.sleep(3)  # the workers follow the stored settings within 2 s
    account = await stack.dv.create("accounts", {"name": "No Phone Ltd", "telephone1": "+1 555 0000",
                                                 "customertypecode": 3})
    found = await stack.wait_until(lambda: customers_named(stack, "No Phone Ltd"), timeout=30)
    assert found[0]["phoneNumber"] == "" and account


async def test_hold_keeps_100_changes_waiting_and_resume_applies_them(stack: Stack) -> None:
    await stack.register_webhooks()
    await stack.admin("/admin/mappings/CUSTOMER/hold", "POST")
    await asyncio.sleep(3)
    names = [f"Held {i:03d}" for i in range(100)]
    await asyncio.gather(*(stack.dv.create("accounts", {"name": n, "customertypecode": 3}) for n in names))

    async def queued() -> bool:
        status = (await stack.admin("/admin/status")).json()
        customer = next(m for m in status["mappings"] if m["name"] == "CUSTOMER")
        return customer["on_hold"] and (customer["queue_depth"] or 0) >= 100

    assert await stack.wait_until(queued, timeout=30)
    await asyncio.sleep(2)
    assert await stack.bc.query("customers", "startswith(displayName,'Held ')") == []  # none before resume
    assert (await stack.admin("/admin/mappings/CUSTOMER/resume", "POST")).json()["on_hold"] is False

    async def all_there() -> bool:
        return len(await stack.bc.query("customers", "startswith(displayName,'Held ')", top=500)) == 100

    assert await stack.wait_until(all_there, timeout=60)


async def test_couple_by_hand_match_errors_and_log(stack: Stack) -> None:
    await stack.register_webhooks()
    # a Sales user and a BC salesperson with different e-mails: coupled by hand, then synchronized from Sales
    person = await stack.bc.create("salespeoplePurchasers", {"code": "MANUAL", "displayName": "Someone Else"})
    coupled = await stack.admin("/admin/couplings", "POST", json={
        "mapping": "SALESPEOPLE", "bc_id": person["id"], "dataverse_id": ALEX, "sync_from": "dataverse"})
    assert coupled.status_code == 201, coupled.text
    again = await stack.admin("/admin/couplings", "POST", json={
        "mapping": "SALESPEOPLE", "bc_id": person["id"], "dataverse_id": ALEX})
    assert again.status_code == 409

    async def renamed() -> bool:
        return (await stack.bc.get("salespeoplePurchasers", person["id"]))["displayName"] == "Alex Seller"

    assert await stack.wait_until(renamed, timeout=30)
    listed = (await stack.admin("/admin/couplings?mapping=SALESPEOPLE")).json()
    assert [c["bc_id"] for c in listed] == [person["id"]]
    # match-based coupling: a customer and an account with the same number; an unmatched one on each side
    twin = await stack.bc.create("customers", {"displayName": "Twin BC"})
    await stack.dv.create("accounts", {"name": "Twin Sales", "accountnumber": twin["number"], "customertypecode": 3})
    report = (await stack.admin("/admin/couplings/match", "POST",
                                json={"mapping": "CUSTOMER", "create_missing": False})).json()
    assert report["coupled"] >= 1
    couplings = (await stack.admin("/admin/couplings?mapping=CUSTOMER&limit=1000")).json()
    assert any(c["bc_id"] == twin["id"] for c in couplings)
    # an error: a customer whose salesperson has no Sales user; retry, dismiss
    await stack.bc.create("salespeoplePurchasers", {"code": "NOUSER", "displayName": "No User"})
    orphan = await stack.bc.create("customers", {"displayName": "Orphan Ltd", "salespersonCode": "NOUSER"})

    async def listed_error() -> list:
        return [e for e in (await stack.admin("/admin/errors?mapping=CUSTOMER")).json()
                if e["source_id"] == orphan["id"]]

    [error] = await stack.wait_until(listed_error, timeout=30)
    assert "NOUSER is not coupled to a Dynamics 365 Sales user" in error["message"]
    assert (await stack.admin(f"/admin/errors/{error['id']}/retry", "POST")).status_code == 200
    assert (await stack.admin("/admin/errors/retry-all", "POST")).json()["retried"] >= 0
    assert (await stack.admin(f"/admin/errors/{error['id']}", "DELETE")).status_code == 204
    log = (await stack.admin("/admin/sync-log?mapping=SALESPEOPLE")).json()
    assert log and sum(entry["modified"] + entry["inserted"] for entry in log) >= 1
    # decouple
    assert (await stack.admin(f"/admin/couplings/{coupled.json()['id']}", "DELETE")).status_code == 204


async def test_the_cli_calls_the_admin_api(stack: Stack) -> None:
    status = cli(stack, "status")
    assert status.returncode == 0 and "CUSTOMER" in status.stdout and "outbox pending" in status.stdout
    assert cli(stack, "hold", "CONTACT").returncode == 0
    shown = cli(stack, "mappings", "CONTACT")
    assert shown.returncode == 0 and json.loads(shown.stdout)["on_hold"] is True
    assert cli(stack, "resume", "CONTACT").returncode == 0
    assert cli(stack, "errors").returncode == 0
    bad = cli(stack, "hold", "NOPE")
    assert bad.returncode == 1 and "404" in bad.stderr
