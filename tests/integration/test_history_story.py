"""The record history's acceptance story: a Sales user changes an account's phone, BC changes it again, the
integration's echo comes back, a conflicting edit loses — the customer's history lists exactly those runs, in
order, with the right decisions and values, found from either side's id."""

import asyncio
import json
from typing import Any

from schemas.vocabulary import Decision
from service.store import couplings, history
from tests.integration.sync_world import World


async def entries_since(world: World, side: str, record_id: str, after: int) -> list[dict[str, Any]]:
    """The pair's entries (found from one side's id, as the admin API does), oldest first, after entry `after`."""
    async with world.db.session() as session:
        coupling = await couplings.find(session, "CUSTOMER", side, record_id)
        assert coupling is not None
        rows = await history.for_pair(session, "CUSTOMER", {record_id, coupling.bc_id, coupling.dataverse_id},
                                      limit=100, before_id=None)
    return [{"id": r.id, "side": r.side, "decision": r.decision, "result": r.result,
             "changes": [(c["side"], c["field"], c["old"], c["new"]) for c in json.loads(r.changes)],
             "events": [e["change_type"] for e in json.loads(r.events)], "reason": r.reason}
            for r in sorted(rows, key=lambda r: r.id or 0) if (r.id or 0) > after]


async def test_the_history_of_a_customer_tells_each_change_echo_and_lost_conflict(world: World) -> None:
    customer = await world.human.bc_create("customers", {"displayName": "Story Ltd", "phoneNumber": "+1 555 0100"})
    bc_id = customer["id"]
    await world.bc_event("CUSTOMER", "customers", bc_id, "created")
    async with world.db.session() as session:
        coupling = await couplings.find(session, "CUSTOMER", "bc", bc_id)
    assert coupling is not None
    account_id = coupling.dataverse_id
    start = await entries_since(world, "bc", bc_id, 0)
    assert [e["decision"] for e in start][-1:] == [Decision.CREATED]
    assert ("dataverse", "telephone1", None, "+1 555 0100") in start[-1]["changes"]
    mark = start[-1]["id"]

    # 1. A Sales user changes the phone: applied to BC.
    await asyncio.sleep(1.1)  # Dataverse keeps whole seconds
    await world.human.dv_update("accounts", account_id, {"telephone1": "+1 555 0111"})
    await world.dv_event("CUSTOMER", "account", account_id)
    # 2. BC changes it again: applied to Sales.
    await asyncio.sleep(1.1)
    await world.human.bc_update("customers", bc_id, {"phoneNumber": "+1 555 0122"})
    await world.bc_event("CUSTOMER", "customers", bc_id)
    # 3. The echo of that write comes back from Sales: nothing to do, and said so.
    await world.dv_event("CUSTOMER", "account", account_id)
    # 4. Both change it before the next run; BC's is the later edit, so Sales' loses (conflict policy latest).
    await asyncio.sleep(1.1)
    await world.human.dv_update("accounts", account_id, {"telephone1": "+1 555 0133"})
    await asyncio.sleep(1.1)
    await world.human.bc_update("customers", bc_id, {"phoneNumber": "+1 555 0144"})
    await world.dv_event("CUSTOMER", "account", account_id)

    assert (await world.human.dv_get("accounts", account_id))["telephone1"] == "+1 555 0144"
    for side, record_id in (("bc", bc_id), ("dataverse", account_id)):
        story = await entries_since(world, side, record_id, mark)
        assert [(e["side"], e["decision"]) for e in story] == [
            ("dataverse", Decision.APPLIED), ("bc", Decision.APPLIED), ("dataverse", Decision.ECHO),
            ("dataverse", Decision.CONFLICT_LOST)], story
        applied_to_bc, applied_to_sales, echo, lost = story
        assert applied_to_bc["changes"] == [("bc", "phoneNumber", "+1 555 0100", "+1 555 0111")]
        assert applied_to_sales["changes"] == [("dataverse", "telephone1", "+1 555 0111", "+1 555 0122")]
        assert echo["changes"] == [] and "echo" in echo["reason"]
        assert lost["changes"] == [("dataverse", "telephone1", "+1 555 0133", "+1 555 0144")], lost
        assert "Business Central's values won" in lost["reason"]
        assert all(e["events"] == ["updated"] for e in story)
