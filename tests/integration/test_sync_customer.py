"""CUSTOMER both ways through the engine against the sandbox: create, update, delete, echoes, dependencies."""

from typing import Any

import pytest

from consumers.errors import MappingUnavailable, SyncFailure
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME
from service.store import couplings
from tests.integration.sync_world import World

ALEX = "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"  # the sandbox's salesperson user


async def coupling_of(w: World, mapping: str, side: str, record_id: str):
    async with w.db.session() as session:
        return await couplings.find(session, mapping, side, record_id)


async def test_an_account_from_sales_becomes_a_customer_with_its_salesperson_synchronized_first(world: World) -> None:
    account = await world.human.dv_create("accounts", {
        "name": "Fabrikam Bikes Ltd.", "telephone1": "+44 20 7946 0958", "emailaddress1": "orders@fabrikam.example",
        "websiteurl": "https://fabrikam.example", "address1_line1": "12 Harbour Street", "address1_city": "Bristol",
        "address1_postalcode": "BS1 4QA", "address1_country": "GB", "customertypecode": 3})
    await world.dv_event("CUSTOMER", "account", account["accountid"], "created")

    salesperson = await coupling_of(world, "SALESPEOPLE", "dataverse", ALEX)
    assert salesperson is not None, "the owner was synchronized to a BC salesperson first"
    person = await world.human.bc_get("salespeoplePurchasers", salesperson.bc_id)
    assert person["code"] == "SP0001" and person["email"] == "alex.seller@contoso.example"

    coupling = await coupling_of(world, "CUSTOMER", "dataverse", account["accountid"])
    assert coupling is not None
    customer = await world.human.bc_get("customers", coupling.bc_id)
    assert customer["displayName"] == "Fabrikam Bikes Ltd."
    assert customer["phoneNumber"] == "+44 20 7946 0958" and customer["email"] == "orders@fabrikam.example"
    assert customer["addressLine1"] == "12 Harbour Street" and customer["city"] == "Bristol"
    assert customer["postalCode"] == "BS1 4QA" and customer["country"] == "GB"
    assert customer["website"] == "https://fabrikam.example"
    assert customer["salespersonCode"] == "SP0001"

    # What BC assigned flows back to the account at once (To CRM fields of a record made from Sales): the number.
    assert (await world.human.dv_get("accounts", account["accountid"]))["accountnumber"] == customer["number"]
    # The BC notification of our own write comes back: unchanged.
    applied = await world.engine.sync_record(world.engine.rules["CUSTOMER"], "bc", coupling.bc_id)
    assert applied.result == "unchanged"
    # A later BC change flows as usual.
    await world.human.bc_update("customers", coupling.bc_id, {"phoneNumber": "+44 20 0000 0000", "creditLimit": 5000})
    await world.bc_event("CUSTOMER", "customers", coupling.bc_id)
    account = await world.human.dv_get("accounts", account["accountid"])
    assert account["telephone1"] == "+44 20 0000 0000"
    assert account["accountnumber"] == customer["number"] and account["creditlimit"] == 5000
    assert account["_ownerid_value"] == ALEX
    applied = await world.engine.sync_record(world.engine.rules["CUSTOMER"], "dataverse", account["accountid"])
    assert applied.result == "unchanged"


async def test_a_customer_from_bc_becomes_an_account_and_deletes_remove_the_coupling(world: World) -> None:
    customer = await world.human.bc_create("customers", {"displayName": "Contoso Retail", "city": "Oslo",
                                                          "email": "info@contoso-retail.example"})
    await world.bc_event("CUSTOMER", "customers", customer["id"], "created")
    coupling = await coupling_of(world, "CUSTOMER", "bc", customer["id"])
    account = await world.human.dv_get("accounts", coupling.dataverse_id)
    assert account["name"] == "Contoso Retail" and account["address1_city"] == "Oslo"
    assert account["accountnumber"] == customer["number"] and account["customertypecode"] == 3
    assert account["emailaddress1"] == "info@contoso-retail.example"

    await world.human.dv_update("accounts", coupling.dataverse_id, {"name": "Contoso Retail AS"})
    await world.dv_event("CUSTOMER", "account", coupling.dataverse_id)
    assert (await world.human.bc_get("customers", customer["id"]))["displayName"] == "Contoso Retail AS"

    await world.human.bc_delete("customers", customer["id"])
    await world.bc_event("CUSTOMER", "customers", customer["id"], "deleted")
    assert await coupling_of(world, "CUSTOMER", "bc", customer["id"]) is None
    assert await world.human.dv_get("accounts", coupling.dataverse_id) is not None  # remove-coupling: left alone
    # ... and not re-created in BC by its next change, until a full synchronization takes it up again
    await world.human.dv_update("accounts", coupling.dataverse_id, {"name": "Survivor AS"})
    applied = await world.engine.sync_record(world.engine.rules["CUSTOMER"], "dataverse", coupling.dataverse_id)
    assert applied.result == "skipped"
    assert await world.human.bc_find("customers", "displayName eq 'Survivor AS'") == []
    full = await world.engine.sync_record(world.engine.rules["CUSTOMER"], "dataverse", coupling.dataverse_id,
                                          kind="full")
    assert full.result == "inserted"
    assert len(await world.human.bc_find("customers", "displayName eq 'Survivor AS'")) == 1


async def test_records_on_both_sides_are_coupled_by_number_not_duplicated(world: World) -> None:
    customer = await world.human.bc_create("customers", {"displayName": "Northwind"})
    account = await world.human.dv_create("accounts", {"name": "Northwind (Sales)", "accountnumber": customer["number"],
                                                       "customertypecode": 3})
    await world.bc_event("CUSTOMER", "customers", customer["id"], "created")
    coupling = await coupling_of(world, "CUSTOMER", "bc", customer["id"])
    assert coupling.dataverse_id == account["accountid"]
    assert len(await world.human.dv_find("accounts", f"accountnumber eq '{customer['number']}'")) == 1
    assert (await world.human.dv_get("accounts", account["accountid"]))["name"] == "Northwind"


async def test_when_the_assigned_number_cannot_be_written_back_the_coupling_stays_and_it_is_applied_again(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    account = await world.human.dv_create("accounts", {"name": "Give Back Ltd", "customertypecode": 3})

    async def refused(*_: Any) -> dict[str, Any]:
        raise SyncFailure("Sales refused the write (a plugin)")

    follow_ups: list[tuple[str, str]] = []

    async def redrive(mapping: str, event: str) -> None:
        follow_ups.append((mapping, event))

    monkeypatch.setattr(world.engine.rules["CUSTOMER"], "_give_back", refused)  # the field flow (FieldRule)
    world.engine.redrive = redrive
    await world.dv_event("CUSTOMER", "account", account["accountid"], "created")
    coupling = await coupling_of(world, "CUSTOMER", "dataverse", account["accountid"])
    assert coupling is not None and coupling.bc_hash is None  # coupled: the customer is never made twice
    assert len(await world.human.bc_find("customers", "displayName eq 'Give Back Ltd'")) == 1
    monkeypatch.undo()
    world.engine.redrive = redrive
    [event] = [e for mapping, e in follow_ups if mapping == "CUSTOMER"]  # (its salesperson was created too)
    await world.engine.handle(BY_NAME["CUSTOMER"], ChangeEvent.model_validate_json(event))
    customer = await world.human.bc_get("customers", coupling.bc_id)
    assert (await world.human.dv_get("accounts", account["accountid"]))["accountnumber"] == customer["number"]


async def test_a_mapping_kept_off_applies_nothing_and_cannot_be_synchronized_first(world: World) -> None:
    world.engine.rules["CUSTOMER"].unavailable = "the tenant has no field website"
    account = await world.human.dv_create("accounts", {"name": "Kept Off Ltd", "customertypecode": 3})
    await world.dv_event("CUSTOMER", "account", account["accountid"], "created")
    assert await coupling_of(world, "CUSTOMER", "dataverse", account["accountid"]) is None
    assert await world.human.bc_find("customers", "displayName eq 'Kept Off Ltd'") == []
    with pytest.raises(MappingUnavailable, match="CUSTOMER cannot run here"):
        await world.engine.sync_dependency("CUSTOMER", "dataverse", account["accountid"])
