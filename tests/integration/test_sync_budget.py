"""Issue 16: requests per change. Our own write's echo costs no request; a notification that also holds someone
else's later change costs one read; a write goes out without reading the other side first (its ETag is kept in
the coupling) and a stale ETag still ends in the conflict policy, not in a lost change.

The notifications are the sandbox's own, through a real subscription, in both readings of their time
(`notification_time`): BC stamps one in the database trigger, before the record's SystemModifiedAt, and keeps the
last change's time when it merges repeated updates (codeunits 6153/6154; docs/echoes.md) — or, the reading left
open, both values fall on the same SQL datetime tick.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest

from schemas.business_central import Notification
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME
from service.connectors.http import ApiTransport
from service.intake import business_central_event
from service.store import couplings, history
from tests.integration.sync_world import World
from tests.integration.test_registration import Receiver, receiver  # noqa: F401 (the fixture)
from tests.integration.test_sync_conflicts import coupled_pair


@contextmanager
def counted(world: World) -> Iterator[dict[str, Counter[str]]]:
    """The requests the engine's two clients send meanwhile, per system, as `METHOD path`."""
    seen: dict[str, Counter[str]] = {"bc": Counter(), "dataverse": Counter()}
    originals: list[tuple[ApiTransport, Any]] = []
    for system, client in (("bc", world.ctx.bc), ("dataverse", world.ctx.dv)):
        transport = client.transport
        original = transport.request

        async def request(method: str, url: str, *, _system: str = system, _original: Any = original,
                          **kwargs: Any) -> Any:
            seen[_system][f"{method} {url.split('?')[0].rsplit('/', 1)[-1]}"] += 1
            return await _original(method, url, **kwargs)

        originals.append((transport, original))
        transport.request = request  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        for transport, original in originals:
            transport.request = original  # type: ignore[method-assign]


class Notifications:
    """A BC subscription to customers whose notifications land here: the sandbox's own, as BC would send them."""

    def __init__(self, world: World, hooks: Receiver) -> None:
        self.world, self.receiver = world, hooks
        self.read = 0  # the receiver's posts that an earlier call took
        self.control = httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.config.bc_port}/_sandbox")

    async def subscribe(self) -> None:
        bc = self.world.ctx.bc
        await bc.transport.request("POST", f"{bc.api_root()}/subscriptions", json={
            "notificationUrl": self.receiver.url + "/bc", "clientState": "budget-test",
            "resource": f"/api/v2.0/companies({bc.company_id})/customers"})

    async def of(self, bc_id: str) -> list[ChangeEvent]:
        """Send what BC holds now; the events of this customer since the last call, as the door makes them.
        BC's own window (the sandbox's notify delay) may have sent them already: the posts are kept, not cleared,
        and read from where the last call stopped (waiting up to 10 s for the first)."""
        events: list[ChangeEvent] = []
        for _ in range(100):
            await self.control.post("/webhooks/flush")
            posts = self.receiver.posts[self.read:]
            items = [Notification.model_validate(item) for _, _, body in posts for item in body["value"]]
            events = [business_central_event(n, correlation_id="n") for n in items
                      if n.parsed_resource.record_id == bc_id.lower()]
            if events:
                self.read += len(posts)
                break
            await asyncio.sleep(0.1)
        return events

    async def aclose(self) -> None:
        await self.control.aclose()


@pytest.fixture
async def notifications(world: World, receiver: Receiver) -> AsyncIterator[Notifications]:  # noqa: F811
    hooks = Notifications(world, receiver)
    await hooks.subscribe()
    yield hooks
    await hooks.aclose()


async def handle(world: World, events: list[ChangeEvent]) -> None:
    assert len(events) == 1, events  # one notification (repeated updates merged)
    await world.engine.handle(BY_NAME["CUSTOMER"], events[0])


async def latest_entry(world: World, bc_id: str) -> Any:
    async with world.db.session() as session:
        entries = await history.for_pair(session, "CUSTOMER", [bc_id], limit=1, before_id=None)
    return entries[0] if entries else None


async def sales_change_reaches_bc(world: World, bc_id: str, account_id: str, name: str) -> dict[str, Any]:
    await world.human.dv_update("accounts", account_id, {"name": name})
    await world.dv_event("CUSTOMER", "account", account_id)
    customer = await world.human.bc_get("customers", bc_id)
    assert customer is not None and customer["displayName"] == name
    return customer


TRIGGER, MODIFIED = {"notification_time": "trigger"}, {"notification_time": "modified"}


@pytest.mark.parametrize("world", [TRIGGER], indirect=True)
async def test_the_echo_of_our_own_bc_write_costs_no_request(world: World, notifications: Notifications) -> None:
    bc_id, account_id = await coupled_pair(world, "Echo Zero Ltd")
    await notifications.of(bc_id)  # the customer's own creation, already applied
    await sales_change_reaches_bc(world, bc_id, account_id, "Echo Zero, Renamed")
    echo = await notifications.of(bc_id)
    with counted(world) as seen:
        await handle(world, echo)
    assert seen == {"bc": Counter(), "dataverse": Counter()}
    entry = await latest_entry(world, bc_id)
    assert entry.result == "unchanged" and entry.decision == "echo", entry
    # Nothing was read, yet the history names the record (the console titles a record's page with it): from the
    # coupling's kept state, as our write left it.
    assert entry.label and entry.label.endswith("Echo Zero, Renamed"), entry.label


@pytest.mark.parametrize("world", [MODIFIED], indirect=True)
async def test_when_bc_stamps_a_notification_with_the_records_own_time_the_echo_is_read(
        world: World, notifications: Notifications) -> None:
    """The other reading: an equal time proves nothing (a person's edit could share the tick), so it is read —
    one read, found unchanged, nothing written."""
    bc_id, account_id = await coupled_pair(world, "Echo Equal Ltd")
    await notifications.of(bc_id)
    customer = await sales_change_reaches_bc(world, bc_id, account_id, "Echo Equal, Renamed")
    echo = await notifications.of(bc_id)
    # BC writes its times without trailing zeros ("…18.9Z"): compared as times, not as text.
    assert echo[0].occurred_at == datetime.fromisoformat(customer["lastModifiedDateTime"])
    with counted(world) as seen:
        await handle(world, echo)
    assert seen == {"bc": Counter({f"GET customers({bc_id})": 1}), "dataverse": Counter()}, seen
    entry = await latest_entry(world, bc_id)
    assert entry.result == "unchanged" and entry.decision == "echo", entry


@pytest.mark.parametrize("world", [TRIGGER, MODIFIED], indirect=True)
async def test_a_merged_notification_with_someone_elses_later_change_costs_one_read(
        world: World, notifications: Notifications) -> None:
    bc_id, account_id = await coupled_pair(world, "Merged Ltd")
    await notifications.of(bc_id)
    await sales_change_reaches_bc(world, bc_id, account_id, "Merged, From Sales")
    await world.human.bc_update("customers", bc_id, {"phoneNumber": "+1 555 0100"})  # a person, after our write
    merged = await notifications.of(bc_id)  # our write and theirs: one notification, their time
    with counted(world) as seen:
        await handle(world, merged)
    assert seen["bc"] == Counter({f"GET customers({bc_id})": 1}), seen  # the one read, and nothing else from BC
    assert seen["dataverse"] == Counter({f"PATCH accounts({account_id})": 1}), seen  # written without a read
    account = await world.human.dv_get("accounts", account_id)
    assert account is not None and account["telephone1"] == "+1 555 0100"
    assert account["name"] == "Merged, From Sales"


async def test_a_write_without_a_read_sends_only_what_changed_and_history_names_it(world: World) -> None:
    bc_id, _ = await coupled_pair(world, "Partial Ltd")
    await world.human.bc_update("customers", bc_id, {"phoneNumber": "+1 555 0199"})
    with counted(world) as seen:
        await world.bc_event("CUSTOMER", "customers", bc_id)
    assert sum(seen["dataverse"].values()) == 1 and sum(seen["bc"].values()) == 1, seen
    entry = await latest_entry(world, bc_id)
    changes = json.loads(entry.changes)
    assert [(c["field"], c["new"]) for c in changes] == [("telephone1", "+1 555 0199")], changes


async def test_a_stale_etag_reads_the_other_side_and_the_conflict_policy_decides(world: World) -> None:
    bc_id, account_id = await coupled_pair(world, "Stale Ltd")
    await world.human.bc_update("customers", bc_id, {"displayName": "Stale, From BC"})
    await asyncio.sleep(1.1)  # Dataverse keeps whole seconds: Sales' edit is the later one
    await world.human.dv_update("accounts", account_id, {"name": "Stale, From Sales"})  # not yet seen by us
    with counted(world) as seen:
        await world.bc_event("CUSTOMER", "customers", bc_id)  # last writer wins: Sales' name stays
    assert seen["dataverse"][f"GET accounts({account_id})"] == 1, seen  # read after the 412
    account = await world.human.dv_get("accounts", account_id)
    customer = await world.human.bc_get("customers", bc_id)
    assert account is not None and customer is not None
    assert account["name"] == customer["displayName"] == "Stale, From Sales"


async def test_lookups_by_code_read_the_store_not_bc(world: World) -> None:
    currency = await world.human.bc_create("currencies", {"code": "NOK", "displayName": "Norwegian Krone",
                                                          "symbol": "kr"})
    await world.bc_event("CURRENCY", "currencies", currency["id"], "created")
    async with world.db.session() as session:
        coupling = await couplings.find(session, "CURRENCY", "bc", currency["id"])
    assert coupling is not None and coupling.bc_key == "NOK", "a CURRENCY coupling keeps the BC code"
    bc_id, account_id = await coupled_pair(world, "Lookup Ltd")
    await world.human.bc_update("customers", bc_id, {"currencyCode": "NOK"})
    with counted(world) as seen:
        await world.bc_event("CUSTOMER", "customers", bc_id)
    assert not any("currencies" in request for request in seen["bc"]), seen
    account = await world.human.dv_get("accounts", account_id)
    assert account is not None and account["_transactioncurrencyid_value"] == coupling.dataverse_id
    # and back: a Sales edit of the account writes the currency's code from the coupling, not from a BC read
    await world.human.dv_update("accounts", account_id, {"name": "Lookup, Renamed"})
    with counted(world) as seen:
        await world.dv_event("CUSTOMER", "account", account_id)
    assert not any("currencies" in request for request in seen["bc"]), seen
    customer = await world.human.bc_get("customers", bc_id)
    assert customer is not None and (customer["displayName"], customer["currencyCode"]) == ("Lookup, Renamed", "NOK")


async def test_a_sales_contact_change_reaches_bc_with_one_write(world: World) -> None:
    _, account_id = await coupled_pair(world, "Contact Write Ltd")
    contact = await world.human.dv_create("contacts", {
        "firstname": "Ana", "lastname": "Trujillo", "emailaddress1": "ana@contact-write.example",
        "parentcustomerid_account@odata.bind": f"/accounts({account_id})"})
    await world.dv_event("CONTACT", "contact", contact["contactid"], "created")
    for phone in ("+1 555 0101", "+1 555 0102"):
        await world.human.dv_update("contacts", contact["contactid"], {"telephone1": phone})
        with counted(world) as seen:
            await world.dv_event("CONTACT", "contact", contact["contactid"])
        assert sum(seen["bc"].values()) == 1 and sum(seen["dataverse"].values()) == 1, seen
