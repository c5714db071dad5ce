"""CUSTOMER both ways through the engine against the sandbox: create, update, delete, echoes, dependencies."""

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

    # The BC notification of our own write comes back: unchanged.
    applied = await world.engine.sync_record(world.engine.rules["CUSTOMER"], "bc", coupling.bc_id)
    assert applied.result == "unchanged"
    # The account number flows back to Sales (To CRM field) on the next BC change.
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


async def test_a_collection_notification_reads_the_changed_set_and_an_unfiltered_one_finds_deletes(world: World) -> None:
    from datetime import UTC, datetime

    from schemas.events import ChangeEvent
    from schemas.mappings import BY_NAME

    kept = await world.human.bc_create("customers", {"displayName": "Kept Ltd"})
    gone = await world.human.bc_create("customers", {"displayName": "Gone Ltd"})
    for record in (kept, gone):
        await world.bc_event("CUSTOMER", "customers", record["id"], "created")
    since = kept["lastModifiedDateTime"]
    fresh = [await world.human.bc_create("customers", {"displayName": f"Bulk {i}"}) for i in range(3)]
    await world.human.bc_delete("customers", gone["id"])

    def collection(filter_: str | None) -> ChangeEvent:
        return ChangeEvent(source="business_central", entity="customers", record_id=None, change_type="collection",
                           occurred_at=datetime.now(UTC), dedupe_key=f"c-{filter_}", correlation_id="c",
                           collection_filter=filter_, full_reconcile=filter_ is None)

    await world.engine.handle(BY_NAME["CUSTOMER"], collection(f"lastModifiedDateTime gt {since}"))
    for record in fresh:
        coupling = await coupling_of(world, "CUSTOMER", "bc", record["id"])
        assert coupling is not None
        assert (await world.human.dv_get("accounts", coupling.dataverse_id))["name"] == record["displayName"]
    assert await coupling_of(world, "CUSTOMER", "bc", gone["id"]) is not None  # a filtered read cannot see deletes
    await world.engine.handle(BY_NAME["CUSTOMER"], collection(None))
    assert await coupling_of(world, "CUSTOMER", "bc", gone["id"]) is None
    assert await coupling_of(world, "CUSTOMER", "bc", kept["id"]) is not None
