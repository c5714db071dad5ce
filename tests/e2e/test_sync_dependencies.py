"""Issue 4 acceptance, end to end: dependency order, live, over the real api and worker processes.

A record that references a dependency which is not coupled yet gets that dependency synchronized first
(where the dependency's mapping allows that direction), then itself. The order is read from the sandboxes'
request logs (the integration's own calls, in arrival order). The "not coupled yet" state is made by
creating the dependency before the webhooks are registered, so that no event ever announced it.
A dependency that cannot be synchronized in its direction ends as an error naming it, and the record syncs
by itself once the dependency gets coupled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.e2e.stack import Stack, StackFactory

pytestmark = pytest.mark.e2e

Json = dict[str, Any]
TIMEOUT = 30.0


@pytest.fixture
async def unregistered(make_stack: StackFactory) -> Stack:
    """sandbox + api + one worker; webhooks NOT registered yet (the test registers them)."""
    stack = await make_stack(workers=0, env={"BCSYNC_RETRY_DELAYS": "1,1,2"})
    await stack.start_metered_worker()
    return stack


async def one(rows: Awaitable[list[Json]]) -> Json | None:
    found = await rows
    assert len(found) <= 1, f"duplicates: {found}"
    return found[0] if found else None


async def wait_row(stack: Stack, fetch: Callable[[], Awaitable[Json | None]], what: str,
                   timeout: float = TIMEOUT) -> Json:
    row: Json = await stack.wait_until(fetch, timeout=timeout, interval=0.2, message=what)
    return row


def first_index(requests: list[Json], method: str, path_part: str, key: str = "path") -> int:
    for index, request in enumerate(requests):
        if request["method"] == method and path_part in request[key]:
            return index
    raise AssertionError(f"no {method} {path_part} in {[(r['method'], r[key]) for r in requests]}")


async def test_an_account_by_a_user_without_salesperson_brings_the_salesperson_first(unregistered: Stack) -> None:
    stack = unregistered
    morgan = await stack.dv.create("systemusers", {
        "firstname": "Morgan", "lastname": "Lee", "internalemailaddress": "morgan.lee@contoso.example",
        "mobilephone": "+1 555 0177", "islicensed": True, "isdisabled": False})
    await stack.register_webhooks()
    account = await stack.dv.create("accounts", {"name": "Wide World Importers", "customertypecode": 3},
                                    user=morgan)
    assert (await stack.dv.get("accounts", account))["_ownerid_value"] == morgan

    customer = await wait_row(stack, lambda: one(stack.bc.query(
        "customers", filter="displayName eq 'Wide World Importers'")), "customer created")
    person = await one(stack.bc.query("salespeoplePurchasers", filter="email eq 'morgan.lee@contoso.example'"))
    assert person is not None, "the owner's salesperson was not created"
    assert (person["displayName"], person["phoneNo"]) == ("Morgan Lee", "+1 555 0177")
    assert customer["salespersonCode"] == person["code"]
    writes = [r for r in await stack.bc.requests() if r["method"] == "POST"]
    assert first_index(writes, "POST", "/salespeoplePurchasers") < first_index(writes, "POST", "/customers")
    assert len([r for r in writes if r["path"].endswith("/salespeoplePurchasers")]) == 1


async def test_an_item_whose_unit_has_no_unit_group_brings_the_group_first(unregistered: Stack) -> None:
    stack = unregistered
    await stack.bc.create("unitsOfMeasure", {"code": "DOZEN", "displayName": "Dozen"})
    await stack.register_webhooks()
    await stack.dv.clear_requests()
    item = await stack.bc.create("items", {"displayName": "Spoke set", "type": "Inventory", "unitPrice": 12.5,
                                           "unitCost": 4, "baseUnitOfMeasureCode": "DOZEN"})
    product = await wait_row(stack, lambda: one(stack.dv.query(
        "products", filter=f"productnumber eq '{item['number']}' and statecode eq 0")), "active product")
    schedule = await one(stack.dv.query("uomschedules", filter="name eq 'DOZEN'"))
    assert schedule is not None, "the unit group was not created"
    [base] = await stack.dv.query("uoms", filter=f"_uomscheduleid_value eq {schedule['uomscheduleid']} "
                                                 "and isschedulebaseuom eq true")
    assert product["_defaultuomscheduleid_value"] == schedule["uomscheduleid"]
    assert product["_defaultuomid_value"] == base["uomid"]
    assert (product["statecode"], product["statuscode"]) == (0, 1)
    writes = [r for r in await stack.dv.requests() if r["method"] in ("POST", "PATCH")]
    assert first_index(writes, "POST", "/uomschedules") < first_index(writes, "POST", "/products")


async def test_a_contact_whose_account_is_not_coupled_brings_the_customer_first(unregistered: Stack) -> None:
    stack = unregistered
    account = await stack.dv.create("accounts", {"name": "Lucerne Publishing", "customertypecode": 3,
                                                 "telephone1": "+41 41 555 0100"})
    await stack.register_webhooks()
    await stack.dv.create("contacts", {
        "firstname": "Nadia", "lastname": "Keller", "emailaddress1": "nadia@lucerne.example",
        "parentcustomerid_account@odata.bind": f"/accounts({account})"})
    person = await wait_row(stack, lambda: one(stack.bc.query(
        "contacts", filter="email eq 'nadia@lucerne.example'")), "person created")
    customer = await one(stack.bc.query("customers", filter="displayName eq 'Lucerne Publishing'"))
    assert customer is not None, "the contact's customer was not created"
    assert customer["phoneNumber"] == "+41 41 555 0100"
    company = (await stack.bc.customer_contacts(customer["id"]))["company"]
    assert person["type"] == "Person" and person["companyNumber"] == company["number"]
    assert person["displayName"] == "Nadia Keller"
    writes = [r for r in await stack.bc.requests() if r["method"] == "POST"]
    assert first_index(writes, "POST", "/customers") < first_index(writes, "POST", "/contacts")


async def test_a_salesperson_without_sales_user_fails_naming_it_then_the_customer_syncs_once_coupled(
        unregistered: Stack) -> None:
    stack = unregistered
    await stack.register_webhooks()
    await stack.bc.create("salespeoplePurchasers", {"code": "JR", "displayName": "Jane Roe",
                                                     "email": "jane.roe@contoso.example"})
    customer = await stack.bc.create("customers", {"displayName": "Adventure Works", "salespersonCode": "JR"})

    def failures() -> list[Json]:
        return [e for e in stack.worker_log_events("record failed")
                if e.get("mapping") == "CUSTOMER" and e.get("record_id") == customer["id"]]

    await stack.wait_until(failures, timeout=TIMEOUT, message="the customer's failure")
    assert all("salesperson JR is not coupled to a Dynamics 365 Sales user" in e["error"] for e in failures())
    # Past its retry budget (1, 1, 2 s) the event is dead-lettered: whatever comes next is not a plain retry.
    await stack.wait_until(lambda: [e for e in stack.worker_log_events("event dead-lettered")
                                    if e.get("mapping") == "CUSTOMER"], timeout=TIMEOUT, message="dead letter")
    assert len(failures()) == 4
    assert await stack.dv.query("accounts", filter="name eq 'Adventure Works'") == []

    # The Sales user with the salesperson's e-mail appears: SALESPEOPLE couples it to JR by e-mail, and the
    # customer that waited for that coupling goes through by itself.
    jane = await stack.dv.create("systemusers", {"firstname": "Jane", "lastname": "Roe", "islicensed": True,
                                                 "isdisabled": False,
                                                 "internalemailaddress": "Jane.Roe@contoso.example"})
    account = await wait_row(stack, lambda: one(stack.dv.query(
        "accounts", filter=f"accountnumber eq '{customer['number']}'")), "account after the coupling")
    assert account["name"] == "Adventure Works" and account["_ownerid_value"] == jane
    people = await stack.bc.query("salespeoplePurchasers")
    assert [p["code"] for p in people] == ["JR"], "the Sales user was not coupled to JR (a new salesperson?)"
