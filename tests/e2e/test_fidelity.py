"""Issue 12 acceptance, end to end: the whole flow against the sandbox in each reading of what Microsoft's
documentation and BC's source leave open — a change on each side of every mapping that can run arrives.

- "documented, no extension": the bcsync BC extension is not installed (its three mappings are kept off and
  setup says why), option values encoded (`"_x0020_"`), notifications carrying the resource as subscribed,
  contacts polled (not in Microsoft's list of webhook-capable resources), Dataverse navigation names in lower
  case, real OperationIds, FulfillSalesOrder unbound, BC notifications stamped at the trigger (before the
  record's modified time);
- "other readings": the extension installed, option values plain, notification resources without the
  leading slash, contacts pushed, navigation names in a mixed case *for every lookup* (so no name the code
  once hard-coded works), an all-zero OperationId, no AsynchronousStepPrimaryName image, FulfillSalesOrder
  bound to its collection, BC notifications carrying the record's own modified time (not the earlier trigger
  time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.e2e.stack import Stack, StackFactory
from tests.harness import CLIENT_STATE

pytestmark = pytest.mark.e2e

Json = dict[str, Any]
TIMEOUT = 45.0
ALEX = "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"  # the sandbox's salesperson in Sales
CUSTOM = {"RESOURCE-PRODUCT", "CUSTPRCGRP-PRICE", "SALESPRC-PRODPRICE"}
READINGS = {
    "documented-no-extension": {"BCSYNC_SANDBOX_CUSTOM_API": "0"},
    "other-readings": {"BCSYNC_SANDBOX_ENUM_STYLE": "plain", "BCSYNC_SANDBOX_NOTIFICATION_RESOURCE": "relative",
                       "BCSYNC_SANDBOX_WEBHOOK_CONTACTS": "1", "BCSYNC_SANDBOX_NAV_STYLE": "pascal",
                       "BCSYNC_SANDBOX_ZERO_OPERATION_ID": "1", "BCSYNC_SANDBOX_ASYNC_PRIMARY_NAME_IMAGE": "0",
                       "BCSYNC_SANDBOX_FULFILL_BINDING": "bound", "BCSYNC_SANDBOX_NOTIFICATION_TIME": "modified"},
}


async def until(stack: Stack, fetch: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], what: str) -> Any:
    """Poll `fetch` until `check` holds for what it returns (a row or rows); that value."""
    async def done() -> Any:
        value = await fetch()
        return value if value and check(value) else None

    return await stack.wait_until(done, timeout=TIMEOUT, interval=0.25, message=what)


async def one(stack: Stack, system: str, entity_set: str, filter_: str, what: str,
              check: Callable[[Json], bool] = lambda _: True) -> Json:
    query = stack.bc.query if system == "bc" else stack.dv.query
    rows = await until(stack, lambda: query(entity_set, filter=filter_), lambda r: len(r) == 1 and check(r[0]), what)
    return dict(rows[0])


@pytest.mark.parametrize("reading", list(READINGS))
async def test_every_mapping_that_can_run_carries_a_change_each_way(make_stack: StackFactory, reading: str) -> None:
    stack = await make_stack(env=READINGS[reading])
    setup = await stack.register_webhooks()
    status = {m["name"]: m for m in (await stack.admin("status")).json()["mappings"]}
    if reading == "documented-no-extension":
        assert set(setup["check"]["unavailable"]) == CUSTOM, setup["check"]
        for name in CUSTOM:
            assert "api/bcsync/integration/v1.0 is not installed" in setup["mappings"][name]["reason"]
            assert not status[name]["available"] and "not installed" in status[name]["unavailable_reason"]
        assert not any("bcsync/integration" in r for r in setup["bc_subscriptions"]["created"])
        assert status["CONTACT"]["bc_delivery"] == "poll"
    else:
        assert setup["check"]["ok"] and status["CONTACT"]["bc_delivery"] == "push"
    assert all(status[n]["available"] for n in status if n not in CUSTOM)
    dv, bc = stack.dv, stack.bc

    # SALESPEOPLE (From CRM): a Sales user becomes a BC salesperson.
    await dv.create("systemusers", {"firstname": "Jo", "lastname": "Rivera", "islicensed": True,
                                           "internalemailaddress": "jo@contoso.example", "isdisabled": False})
    await one(stack, "bc", "salespeoplePurchasers", "email eq 'jo@contoso.example'", "salesperson from a Sales user")

    # CURRENCY and UNITOFMEASURE (To CRM).
    await bc.create("currencies", {"code": "NOK", "displayName": "Norwegian Krone", "symbol": "kr"})
    await one(stack, "dv", "transactioncurrencies", "isocurrencycode eq 'NOK'", "currency")
    await bc.create("unitsOfMeasure", {"code": "PCS", "displayName": "Piece"})
    group = await one(stack, "dv", "uomschedules", "name eq 'PCS'", "unit group")

    # ITEM-PRODUCT: an item becomes an Active product in its unit group (lookups named as the org names them);
    # the product's name comes back to BC.
    item = await bc.create("items", {"displayName": "Bike helmet", "unitPrice": 49.5, "baseUnitOfMeasureCode": "PCS"})
    product = await one(stack, "dv", "products", f"productnumber eq '{item['number']}'", "product from an item",
                        lambda p: p["statecode"] == 0 and p["_defaultuomscheduleid_value"] == group["uomscheduleid"])
    await dv.update("products", product["productid"], {"name": "Bike helmet Pro"})
    await until(stack, lambda: bc.get("items", item["id"]), lambda i: i["displayName"] == "Bike helmet Pro",
                "item renamed from Sales")

    # CUSTOMER from BC: a customer that is not blocked (its blank option as BC writes it) becomes an account.
    customer = await bc.create("customers", {"displayName": "Contoso Cycles", "phoneNumber": "+1 425 555 0100"})
    assert customer["blocked"] in ("_x0020_", " ")
    await one(stack, "dv", "accounts", f"accountnumber eq '{customer['number']}'", "account from a BC customer",
              lambda a: a["telephone1"] == "+1 425 555 0100")

    # CUSTOMER from Sales: the account owned by the salesperson becomes a customer; the number BC assigns
    # comes back to the account.
    owner = await dv.bind("account", "ownerid", "systemusers", ALEX)
    account = await dv.create("accounts", {"name": "Fabrikam Bikes", "customertypecode": 3, **owner})
    created = await one(stack, "bc", "customers", "displayName eq 'Fabrikam Bikes'", "customer from an account",
                        lambda c: bool(c["salespersonCode"]))
    await until(stack, lambda: dv.get("accounts", account), lambda a: a["accountnumber"] == created["number"],
                "the BC customer number on the account")

    # CONTACT both ways: a Sales contact under the account becomes a BC person of the customer's company (its
    # company contact found among the customer's contactsInformation, which lists its persons too) ...
    parent = await dv.bind("contact", "parentcustomerid", "accounts", account)
    contact = await dv.create("contacts", {"firstname": "Ana", "lastname": "Trujillo",
                                           "emailaddress1": "ana@fabrikam.example", **parent})
    person = await one(stack, "bc", "contacts", "email eq 'ana@fabrikam.example'", "BC person from a Sales contact",
                       lambda p: p["type"] == "Person" and bool(p["companyNumber"]))
    # ... and a change of the person in BC reaches Sales (pushed or polled, as setup found out).
    await bc.patch("contacts", person["id"], {"displayName": "Ana Trujillo Diaz"})
    await until(stack, lambda: dv.get("contacts", contact), lambda c: c["lastname"] == "Diaz",
                "the BC person's new name in Sales")

    # SALESORDER-ORDER: a submitted Sales order becomes a BC order with its line; BC ships it: Fulfilled.
    order = await dv.create("salesorders", {"name": "PO-FIDELITY", **await dv.bind("salesorder", "customerid",
                                                                                   "accounts", account)})
    await dv.create("salesorderdetails", {
        **await dv.bind("salesorderdetail", "salesorderid", "salesorders", order),
        **await dv.bind("salesorderdetail", "productid", "products", product["productid"]),
        **await dv.bind("salesorderdetail", "uomid", "uoms", product["_defaultuomid_value"]),
        "lineitemnumber": 1, "quantity": 2, "priceperunit": 49.5})
    await dv.submit_order(order)
    bc_order = await one(stack, "bc", "salesOrders", "externalDocumentNumber eq 'PO-FIDELITY'", "BC order")
    lines = await bc.query("salesOrderLines", f"documentId eq {bc_order['id']}")
    assert [(line["lineType"], line["itemId"], line["quantity"]) for line in lines] == [("Item", item["id"], 2)]
    await bc.ship(bc_order["id"])
    await until(stack, lambda: dv.get("salesorders", order), lambda o: (o["statecode"], o["statuscode"]) == (3, 100001),
                "Sales order Fulfilled")

    # POSTEDSALESINV-INV: BC posts the order; the invoice appears in Sales with its line, the order Invoiced.
    await bc.post_order(bc_order["id"])
    [posted] = await bc.query("salesInvoices", f"orderId eq {bc_order['id']}")
    invoice = await one(stack, "dv", "invoices", f"invoicenumber eq '{posted['number']}'", "Sales invoice",
                        lambda i: i["_salesorderid_value"] == order)
    # The invoice is created before its lines (one request each; no $batch changeset yet): the lines follow.
    details = await until(stack, lambda: dv.query("invoicedetails", f"_invoiceid_value eq {invoice['invoiceid']}"),
                          lambda rows: len(rows) >= 1, "the Sales invoice's line")
    assert [(d["_productid_value"], d["quantity"]) for d in details] == [(product["productid"], 2)]
    await until(stack, lambda: dv.get("salesorders", order), lambda o: (o["statecode"], o["statuscode"]) == (4, 100003),
                "Sales order Invoiced")
    errors = (await stack.admin("errors")).json()
    assert not [e for e in (errors if isinstance(errors, list) else errors.get("errors", [])) if e["state"] != "resolved"]


async def test_setup_names_a_field_the_tenant_lacks_and_starts_the_other_mappings(make_stack: StackFactory) -> None:
    stack = await make_stack(env={"BCSYNC_SANDBOX_MISSING_FIELDS": "customers.website"})
    check = (await stack.admin("setup/check")).json()  # read-only first: it writes nothing
    assert set(check["unavailable"]) == {"CUSTOMER"} and "no field website" in check["unavailable"]["CUSTOMER"]
    assert not (await stack.bc.webhooks())["subscriptions"]
    setup = await stack.register_webhooks()
    assert not setup["mappings"]["CUSTOMER"]["available"]
    assert "customers has no field website (mapped to websiteurl)" in setup["mappings"]["CUSTOMER"]["reason"]
    assert all(found["available"] for name, found in setup["mappings"].items() if name != "CUSTOMER")
    # The others run: an item becomes a product ...
    await stack.bc.create("unitsOfMeasure", {"code": "PCS", "displayName": "Piece"})
    item = await stack.bc.create("items", {"displayName": "Bike lock", "unitPrice": 20, "baseUnitOfMeasureCode": "PCS"})
    await one(stack, "dv", "products", f"productnumber eq '{item['number']}'", "product from an item")
    # ... and CUSTOMER, kept off, is neither subscribed nor registered: a customer made in BC stays there.
    assert not any(r.endswith("/customers") for r in setup["bc_subscriptions"]["created"])
    assert not any(step.endswith(" of account") for step in setup["dataverse_webhook"]["created"])
    customer = await stack.bc.create("customers", {"displayName": "Kept Off Ltd"})
    await stack.bc.flush()
    item2 = await stack.bc.create("items", {"displayName": "Bike bell", "unitPrice": 5, "baseUnitOfMeasureCode": "PCS"})
    await one(stack, "dv", "products", f"productnumber eq '{item2['number']}'", "a later product")  # time passed
    assert await stack.dv.query("accounts", filter=f"accountnumber eq '{customer['number']}'") == []
    assert not stack.change_events("CUSTOMER")


async def test_a_notification_post_of_3000_entries_one_malformed_is_accepted_and_every_change_arrives(
        make_stack: StackFactory) -> None:
    """BC sends every subscription's entries at one URL in one POST: the door takes the well-formed ones
    (and catches up the rest) and never answers 4xx, which would delete every subscription. Every change
    reaches its mapping's queue (held, to count them), and flows on once resumed."""
    stack = await make_stack()
    await stack.bc.seed(customers=1500, items=1499, salespeople=0, contactsPerCustomer=0)  # no webhooks
    customers = await stack.bc.query("customers", top=2000)
    items = await stack.bc.query("items", top=2000)
    company = f"/api/v2.0/companies({stack.company_id})"
    entries: list[Json] = [
        {"subscriptionId": sub, "clientState": CLIENT_STATE, "expirationDateTime": "2030-01-01T00:00:00Z",
         "resource": f"{company}/{entity_set}({row['id']})", "changeType": "created",
         "lastModifiedDateTime": row["lastModifiedDateTime"]}
        for sub, entity_set, rows in (("s-customers", "customers", customers), ("s-items", "items", items))
        for row in rows]
    # Malformed (no such change type, no time), and of another company: nothing to catch up for it, so that the
    # queues below hold exactly the well-formed entries' changes (test_bc_door_large.py covers the catch-up).
    other = "/api/v2.0/companies(11111111-2222-4333-8444-555555555555)/items(66666666-7777-4888-9999-000000000000)"
    entries.insert(1234, {"subscriptionId": "s-items", "clientState": CLIENT_STATE, "changeType": "renamed",
                          "resource": other, "lastModifiedDateTime": "yesterday"})
    assert len(entries) == 3000  # about 0.9 MB (test_bc_door_large.py sends several MB)
    for mapping in ("CUSTOMER", "ITEM-PRODUCT"):
        assert (await stack.admin(f"mappings/{mapping}/hold", "POST")).status_code == 200
    # (The worker stops consuming a held mapping within 2 s, not at once: issue 13.)
    await stack.wait_until(lambda: len({e["mapping"] for e in stack.worker_log_events("mapping on hold: not consuming")
                                        } & {"CUSTOMER", "ITEM-PRODUCT"}) == 2, timeout=10)
    response = await stack.http.post(f"{stack.api_url}/webhooks/business-central", json={"value": entries},
                                     timeout=120)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["events"], body["new"], body["dropped"]) == (2999, 2999, 1)

    depth: dict[str, int] = {}

    async def queued() -> bool:
        depth.update({m["name"]: m["queue_depth"] for m in (await stack.admin("status")).json()["mappings"]})
        return depth["CUSTOMER"] == 1500 and depth["ITEM-PRODUCT"] == 1499

    try:
        await stack.wait_until(queued, timeout=60, interval=0.5)
    except AssertionError:
        raise AssertionError(f"every change on its mapping's queue: {depth}") from None
    for mapping in ("CUSTOMER", "ITEM-PRODUCT"):
        assert (await stack.admin(f"mappings/{mapping}/resume", "POST")).status_code == 200

    async def flowing() -> bool:
        return len(await stack.dv.query("accounts", select="accountnumber", top=50)) >= 50

    await stack.wait_until(flowing, timeout=60, interval=1, message="customers arriving in Sales")
