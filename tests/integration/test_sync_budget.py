"""Issue 16: requests per change. Our own write's echo costs no request; a notification that also holds someone
else's later change costs one read; a write goes out without reading the other side first (its ETag is kept in
the coupling) and a stale ETag still ends in the conflict policy, not in a lost change.

A BC notification's `lastModifiedDateTime` is the time of the record's latest change it stands for (codeunit 6154
"API Webhook Notification Send" merges repeated updates keeping the last change's time; docs/echoes.md). The
sandbox sends the row's modified time; here the events carry the BC record's `lastModifiedDateTime` as read.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME
from service.connectors.http import ApiTransport
from service.store import couplings, history
from tests.integration.sync_world import World
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


def notification(bc_id: str, modified: str) -> ChangeEvent:
    """A BC notification of a customer as BC sends it: the time of the record's last change it stands for."""
    return ChangeEvent(source="business_central", entity="customers", record_id=bc_id, change_type="updated",
                       occurred_at=datetime.fromisoformat(modified.replace("Z", "+00:00")),
                       dedupe_key=f"n-{bc_id}-{modified}", correlation_id="n")


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


async def test_the_echo_of_our_own_bc_write_costs_no_request(world: World) -> None:
    bc_id, account_id = await coupled_pair(world, "Echo Zero Ltd")
    customer = await sales_change_reaches_bc(world, bc_id, account_id, "Echo Zero, Renamed")
    with counted(world) as seen:
        await world.engine.handle(BY_NAME["CUSTOMER"], notification(bc_id, customer["lastModifiedDateTime"]))
    assert seen == {"bc": Counter(), "dataverse": Counter()}
    entry = await latest_entry(world, bc_id)
    assert entry.result == "unchanged" and entry.decision == "echo", entry


async def test_a_merged_notification_with_someone_elses_later_change_costs_one_read(world: World) -> None:
    bc_id, account_id = await coupled_pair(world, "Merged Ltd")
    await sales_change_reaches_bc(world, bc_id, account_id, "Merged, From Sales")
    await asyncio.sleep(0.01)  # a person's edit after our write: BC merges both into one notification, their time
    after = await world.human.bc_update("customers", bc_id, {"phoneNumber": "+1 555 0100"})
    with counted(world) as seen:
        await world.engine.handle(BY_NAME["CUSTOMER"], notification(bc_id, after["lastModifiedDateTime"]))
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
