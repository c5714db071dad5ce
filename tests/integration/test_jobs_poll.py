"""Polling of a BC side that BC cannot notify: changed records by lastModifiedDateTime become outbox events;
every Nth poll lists the ids only and asks the engine to look at coupled records that are gone."""

from __future__ import annotations

from consumers.jobs.poll import PollJob
from service.store import couplings, jobs
from tests.integration.sync_world import World
from tests.integration.test_jobs_catch_up import catch_up, outbox_events


async def test_a_polled_side_publishes_its_changes_and_finds_its_deletes(world: World) -> None:
    rule = world.engine.rules["CONTACT"]
    rule.bc_delivery = "poll"  # what setup stores when BC cannot notify contacts
    poll = PollJob(catch_up(world, bc_poll_seconds=60, bc_poll_full_every=2))
    assert poll.polled() == [rule]
    customer = await world.human.bc_create("customers", {"displayName": "Polled Ltd"})
    company = (await world.human.bc.get(f"/customers/{customer['id']}/contacts")).json()["company"]
    person = await world.human.bc_create("contacts", {"type": "Person", "displayName": "Poll Person",
                                                       "companyNumber": company["number"], "email": "p@polled.example"})
    await world.bc_event("CONTACT", "contacts", person["id"])  # coupled (its customer first)
    await world.human.bc_update("contacts", person["id"], {"phoneNumber": "+1 425 555 0100"})

    assert await poll.poll(rule) >= 1
    changed = [e for e in await outbox_events(world) if e["record_id"] == person["id"]]
    assert [e["change_type"] for e in changed] == ["updated"]
    assert await poll.poll(rule) == 0  # within the overlap: not twice; and nothing is gone yet (2nd poll)

    await world.human.bc_delete("contacts", person["id"])
    await poll.poll(rule)  # 3rd: a read by modified time does not see the delete
    assert [e["record_id"] for e in await outbox_events(world)].count(person["id"]) == 1
    assert await poll.poll(rule) == 1  # 4th: ids only; the coupled person is missing
    gone = [e for e in await outbox_events(world) if e["record_id"] == person["id"]][-1]
    assert gone["dedupe_key"].startswith("gone:CONTACT:")
    async with world.db.session() as session:
        state = await jobs.catch_up_state(session, "CONTACT")
        assert state.polls == 4 and state.poll_watermark is not None and state.poll_error is None


async def test_a_polled_record_the_mapping_filter_leaves_out_is_not_published(world: World) -> None:
    """A customer's change also changes its company contact (table 5050 Contact, via UpdateContFromCust): CONTACT
    takes persons only, so the poll does not publish it — its run would read it only to skip it."""
    rule = world.engine.rules["CONTACT"]
    rule.bc_delivery = "poll"
    poll = PollJob(catch_up(world, bc_poll_seconds=60))
    customer = await world.human.bc_create("customers", {"displayName": "Company Only Ltd"})
    company = (await world.human.bc.get(f"/customers/{customer['id']}/contacts")).json()["company"]
    await world.human.bc_update("customers", customer["id"], {"email": "info@company-only.example"})
    person = await world.human.bc_create("contacts", {"type": "Person", "displayName": "Listed Person",
                                                       "companyNumber": company["number"]})
    await poll.poll(rule)
    published = {e["record_id"] for e in await outbox_events(world)}
    assert person["id"] in published and company["id"] not in published, published


async def test_a_polled_record_as_our_last_write_left_it_is_not_published(world: World) -> None:
    """The poll lists our own write of a person (its SystemModifiedAt equals what the coupling holds, which alone
    proves nothing): the ETag the coupling kept says it is that very version, so no event and no read."""
    rule = world.engine.rules["CONTACT"]
    rule.bc_delivery = "poll"
    poll = PollJob(catch_up(world, bc_poll_seconds=60))
    customer = await world.human.bc_create("customers", {"displayName": "Own Write Ltd"})
    company = (await world.human.bc.get(f"/customers/{customer['id']}/contacts")).json()["company"]
    person = await world.human.bc_create("contacts", {"type": "Person", "displayName": "Own Write",
                                                       "companyNumber": company["number"], "email": "o@own.example"})
    await world.bc_event("CONTACT", "contacts", person["id"])  # coupled: the Sales contact created
    async with world.db.session() as session:
        coupling = await couplings.find(session, "CONTACT", "bc", person["id"])
    assert coupling is not None
    await world.human.dv_update("contacts", coupling.dataverse_id, {"telephone1": "+1 425 555 0199"})
    await world.dv_event("CONTACT", "contact", coupling.dataverse_id)  # our PATCH of the BC person
    await poll.poll(rule)
    assert person["id"] not in {e["record_id"] for e in await outbox_events(world)}


async def test_only_polled_running_sources_are_polled(world: World) -> None:
    poll = PollJob(catch_up(world))
    world.engine.rules["CONTACT"].bc_delivery = "poll"
    world.engine.rules["SALESPEOPLE"].bc_delivery = "poll"  # From CRM: BC's changes are not needed
    world.engine.rules["CUSTOMER"].bc_delivery = "push"
    assert [r.name for r in poll.polled()] == ["CONTACT"]
    world.engine.rules["CONTACT"].unavailable = "kept off by setup"
    assert poll.polled() == []
