"""CURRENCY, UNITOFMEASURE, ITEM-PRODUCT, RESOURCE-PRODUCT, SALESPEOPLE and CONTACT through the engine."""

import asyncio
from typing import Any

import pytest

from consumers.errors import MissingDependency
from service.connectors.http import ApiError
from service.store import couplings, synclog
from tests.integration.sync_world import World

ALEX = "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"
CUSTOM = "bcsync/integration/v1.0"


async def company_contact(w: World, customer_id: str) -> dict:
    """The company contact that stands for a customer: its contactsInformation (page 30072) lists the company
    contact and the company's persons."""
    rows = [row async for row in w.ctx.bc.list(f"customers({customer_id})/contactsInformation")]
    return next(row for row in rows if row["contactType"] == "Company")


async def coupled(w: World, mapping: str, side: str, record_id: str) -> str:
    async with w.db.session() as session:
        coupling = await couplings.find(session, mapping, side, record_id)
    assert coupling is not None, f"{mapping} {side} {record_id} is not coupled"
    return coupling.dataverse_id if side == "bc" else coupling.bc_id


async def test_currency_to_sales(world: World) -> None:
    currency = await world.human.bc_create("currencies", {"code": "NOK", "displayName": "Norwegian Krone",
                                                          "symbol": "kr"})
    await world.bc_event("CURRENCY", "currencies", currency["id"], "created")
    row = await world.human.dv_get("transactioncurrencies", await coupled(world, "CURRENCY", "bc", currency["id"]))
    assert (row["isocurrencycode"], row["currencyname"], row["currencysymbol"]) == ("NOK", "Norwegian Krone", "kr")
    assert row["exchangerate"] == 1.0
    await world.human.bc_update("currencies", currency["id"], {"displayName": "Krone"})
    await world.bc_event("CURRENCY", "currencies", currency["id"])
    assert (await world.human.dv_get("transactioncurrencies", row["transactioncurrencyid"]))["currencyname"] == "Krone"


async def test_an_item_whose_unit_has_no_unit_group_gets_the_group_first_then_an_active_product(world: World) -> None:
    unit = await world.human.bc_create("unitsOfMeasure", {"code": "BOX", "displayName": "Box"})
    item = await world.human.bc_create("items", {
        "displayName": "Bike helmet", "type": "Inventory", "unitPrice": 49.5, "unitCost": 20,
        "baseUnitOfMeasureCode": "BOX", "inventory": -3})
    await world.bc_event("ITEM-PRODUCT", "items", item["id"], "created")
    schedule_id = await coupled(world, "UNITOFMEASURE", "bc", unit["id"])
    schedule = await world.human.dv_get("uomschedules", schedule_id)
    assert schedule["name"] == "BOX" and schedule["baseuomname"] == "BOX"
    product = await world.human.dv_get("products", await coupled(world, "ITEM-PRODUCT", "bc", item["id"]))
    assert product["name"] == "Bike helmet" and product["productnumber"] == item["number"]
    assert product["price"] == 49.5 and product["standardcost"] == 20 and product["currentcost"] == 20
    assert product["quantityonhand"] == 0  # negative inventory becomes 0
    assert product["producttypecode"] == 1
    assert product["_defaultuomscheduleid_value"] == schedule_id
    assert (product["statecode"], product["statuscode"]) == (0, 1)  # Active, not Draft

    # The name comes back from Sales; nothing else does.
    await world.human.dv_update("products", product["productid"], {"name": "Bike helmet L", "price": 1})
    await world.dv_event("ITEM-PRODUCT", "product", product["productid"])
    item_after = await world.human.bc_get("items", item["id"])
    assert item_after["displayName"] == "Bike helmet L" and item_after["unitPrice"] == 49.5


async def test_resources_become_service_products(world: World) -> None:
    await world.human.bc_create("unitsOfMeasure", {"code": "HOUR", "displayName": "Hour"})
    resource = await world.human.bc_create("resources", {
        "displayName": "Installation hour", "baseUnitOfMeasureCode": "HOUR", "unitPrice": 80, "unitCost": 35})
    await world.bc_event("RESOURCE-PRODUCT", "resources", resource["id"], "created")
    product = await world.human.dv_get("products", await coupled(world, "RESOURCE-PRODUCT", "bc", resource["id"]))
    assert product["producttypecode"] == 3 and product["name"] == "Installation hour" and product["price"] == 80


async def test_salespeople_from_sales_users_and_not_the_other_way(world: World) -> None:
    user = await world.human.dv_create("systemusers", {
        "firstname": "Jo", "lastname": "Rivera", "internalemailaddress": "jo.rivera@contoso.example",
        "mobilephone": "+1 555 0199", "islicensed": True, "isdisabled": False})
    await world.dv_event("SALESPEOPLE", "systemuser", user["systemuserid"], "created")
    person = await world.human.bc_get("salespeoplePurchasers", await coupled(world, "SALESPEOPLE", "dataverse",
                                                                              user["systemuserid"]))
    assert person["displayName"] == "Jo Rivera" and person["email"] == "jo.rivera@contoso.example"
    assert person["phoneNo"] == "+1 555 0199" and person["code"].startswith("SP")
    # A salesperson made in BC does not create a Sales user (From CRM only): skipped, not failed.
    local = await world.human.bc_create("salespeoplePurchasers", {"code": "JR", "displayName": "Local"})
    applied = await world.engine.sync_record(world.engine.rules["SALESPEOPLE"], "bc", local["id"])
    assert applied.result == "skipped"


async def test_sales_users_created_together_get_distinct_salesperson_codes(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight users at once in one worker: each gets its own code at the first try (no 409 round trips)."""
    create, tries = world.ctx.bc.create, []

    async def counted(entity_set: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        tries.append(entity_set)
        return await create(entity_set, body, **kwargs)

    monkeypatch.setattr(world.ctx.bc, "create", counted)
    users = [await world.human.dv_create("systemusers", {"firstname": "Rep", "lastname": f"No{n}", "islicensed": True,
                                                         "isdisabled": False}) for n in range(8)]
    await asyncio.gather(*(world.dv_event("SALESPEOPLE", "systemuser", u["systemuserid"], "created") for u in users))
    codes = [(await world.human.bc_get("salespeoplePurchasers", await coupled(
        world, "SALESPEOPLE", "dataverse", u["systemuserid"])))["code"] for u in users]
    assert len(set(codes)) == 8 and all(c.startswith("SP") for c in codes)
    assert tries.count("salespeoplePurchasers") == 8


async def test_a_customer_whose_salesperson_has_no_user_fails_naming_it_and_syncs_once_it_is_coupled(world: World) -> None:
    await world.human.bc_create("salespeoplePurchasers", {"code": "JR", "displayName": "Jane Roe",
                                                          "email": "jane.roe@contoso.example"})
    customer = await world.human.bc_create("customers", {"displayName": "Adatum", "salespersonCode": "JR"})
    with pytest.raises(MissingDependency, match="salesperson JR is not coupled to a Dynamics 365 Sales user"):
        await world.bc_event("CUSTOMER", "customers", customer["id"], "created")
    async with world.db.session() as session:
        errors = await synclog.open_errors(session, "CUSTOMER")
    assert [e.source_id for e in errors] == [customer["id"]] and "JR" in errors[0].message
    assert errors[0].waiting_for is not None and errors[0].waiting_for.startswith("SALESPEOPLE:bc:")
    # The Sales user with that e-mail appears: it couples to JR by e-mail, and the customer goes through.
    user = await world.human.dv_create("systemusers", {"firstname": "Jane", "lastname": "Roe", "islicensed": True,
                                                       "internalemailaddress": "jane.roe@contoso.example"})
    await world.dv_event("SALESPEOPLE", "systemuser", user["systemuserid"], "created")
    assert len(await world.human.bc_find("salespeoplePurchasers", "email eq 'jane.roe@contoso.example'")) == 1
    await world.bc_event("CUSTOMER", "customers", customer["id"])
    account = await world.human.dv_get("accounts", await coupled(world, "CUSTOMER", "bc", customer["id"]))
    assert account["_ownerid_value"] == user["systemuserid"]
    async with world.db.session() as session:
        assert await synclog.open_errors(session, "CUSTOMER") == []


async def test_a_contact_whose_account_is_not_coupled_brings_the_customer_first(world: World) -> None:
    account = await world.human.dv_create("accounts", {"name": "Litware", "customertypecode": 3})
    contact = await world.human.dv_create("contacts", {
        "firstname": "Ana Maria", "lastname": "Trujillo", "emailaddress1": "ana@litware.example",
        "jobtitle": "Buyer", "telephone1": "+1 555 0100", "mobilephone": "+1 555 0101",
        "parentcustomerid_account@odata.bind": f"/accounts({account['accountid']})"})
    await world.dv_event("CONTACT", "contact", contact["contactid"], "created")
    customer_id = await coupled(world, "CUSTOMER", "dataverse", account["accountid"])
    person = await world.human.bc_get("contacts", await coupled(world, "CONTACT", "dataverse", contact["contactid"]))
    company = await company_contact(world, customer_id)
    assert person["type"] == "Person" and person["companyNumber"] == company["contactNumber"]
    assert person["displayName"] == "Ana Maria Trujillo" and person["email"] == "ana@litware.example"
    assert person["phoneNumber"] == "+1 555 0100" and "jobTitle" not in person  # API v2.0 contacts have none
    assert person["mobilePhoneNumber"] == "+1 555 0101"
    # And back: BC renames the person; Sales gets the split name.
    await world.human.bc_update("contacts", person["id"], {"displayName": "Ana Trujillo Diaz"})
    await world.bc_event("CONTACT", "contacts", person["id"])
    row = await world.human.dv_get("contacts", contact["contactid"])
    assert (row["firstname"], row["lastname"]) == ("Ana Trujillo", "Diaz")


async def test_a_record_that_fails_twice_on_an_unavailable_service_is_not_skipped(world: World) -> None:
    """503s (or 429s, timeouts) say nothing about the record: it stays on the retry path however often they repeat
    the same message, and its next event applies it. Skipping it would drop every later change of the record."""
    customer = await world.human.bc_create("customers", {"displayName": "Tailspin Toys"})
    attempts = world.ctx.dv.transport.max_attempts
    response = await world.human.dv.post("/faults", json={"status": 503, "count": 2 * attempts, "retry_after": 0})
    assert response.status_code in (200, 201, 204), response.text
    for _ in range(2):  # both events use up their requests' retries on the same 503
        with pytest.raises(ApiError, match="503"):
            await world.bc_event("CUSTOMER", "customers", customer["id"], "created")
    async with world.db.session() as session:
        [error] = await synclog.open_errors(session, "CUSTOMER")
        assert (error.state, error.attempts) == ("open", 2) and "503" in error.message
        assert not await synclog.is_skipped(session, "CUSTOMER", "business_central", customer["id"])
    await world.bc_event("CUSTOMER", "customers", customer["id"])  # the service is back
    account = await world.human.dv_get("accounts", await coupled(world, "CUSTOMER", "bc", customer["id"]))
    assert account is not None and account["name"] == "Tailspin Toys"
    async with world.db.session() as session:
        assert await synclog.open_errors(session, "CUSTOMER") == []  # resolved by the run that applied it


async def test_a_bc_person_contact_becomes_a_sales_contact_under_the_coupled_account(world: World) -> None:
    customer = await world.human.bc_create("customers", {"displayName": "Proseware"})
    company = await company_contact(world, customer["id"])
    person = await world.human.bc_create("contacts", {"type": "Person", "displayName": "Lee Chen",
                                                       "companyNumber": company["contactNumber"],
                                                       "email": "lee@proseware.example"})
    await world.bc_event("CONTACT", "contacts", person["id"], "created")
    account_id = await coupled(world, "CUSTOMER", "bc", customer["id"])
    row = await world.human.dv_get("contacts", await coupled(world, "CONTACT", "bc", person["id"]))
    assert (row["firstname"], row["lastname"]) == ("Lee", "Chen") and row["_parentcustomerid_value"] == account_id
    # A company contact is not a person: skipped.
    applied = await world.engine.sync_record(world.engine.rules["CONTACT"], "bc", company["contactId"])
    assert applied.result == "skipped"


async def test_a_record_that_fails_twice_the_same_way_is_skipped_until_retried(world: World) -> None:
    from service.store import synclog

    unit = await world.human.bc_create("unitsOfMeasure", {"code": "KEG", "displayName": "Keg"})
    item = await world.human.bc_create("items", {"displayName": "Keg of oil", "baseUnitOfMeasureCode": "KEG"})
    await world.human.bc_delete("unitsOfMeasure", unit["id"])  # the item now names a unit that does not exist
    for _ in range(2):
        with pytest.raises(MissingDependency):
            await world.bc_event("ITEM-PRODUCT", "items", item["id"])
    async with world.db.session() as session:
        [error] = await synclog.open_errors(session, "ITEM-PRODUCT")
    assert error.state == "open" and error.waiting_for  # waiting for a dependency: never skipped
    # a failure that is not a missing dependency: the second identical one marks the record skipped
    async with world.db.session() as session:
        for _ in range(2):
            await synclog.record_error(session, "CUSTOMER", "business_central", "c1", "400 BadRequest: no", event="{}")
        assert await synclog.is_skipped(session, "CUSTOMER", "business_central", "c1")
    calls = []
    original = world.engine.sync_record

    async def spy(*args, **kwargs):
        calls.append(args)
        return await original(*args, **kwargs)

    world.engine.sync_record = spy  # type: ignore[method-assign]
    await world.bc_event("CUSTOMER", "customers", "c1")
    assert calls == []  # skipped: not applied until an operator retries it
