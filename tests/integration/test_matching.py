"""The matcher against the sandbox: per record (OData equality at the server) and in bulk ("Generate
Integration IDs": normalised text in memory)."""

from __future__ import annotations

from schemas.mappings import BY_NAME
from schemas.vocabulary import Side
from service.matching import Matcher
from service.store import couplings
from tests.integration.sync_world import World


async def test_candidates_and_couple_all_find_the_same_pair(world: World) -> None:
    matcher = Matcher(BY_NAME["CUSTOMER"], world.ctx.bc, world.ctx.dv)
    alpha = await world.human.bc_create("customers", {"displayName": "Matcher Alpha"})
    beta = await world.human.bc_create("customers", {"displayName": "Matcher Beta"})
    account = await world.human.dv_create("accounts", {"name": "Alpha by another name", "customertypecode": 3,
                                                        "accountnumber": alpha["number"].lower()})
    twins = [await world.human.dv_create("accounts", {"name": name, "customertypecode": 3})
             for name in ("Matcher Beta", " matcher beta ")]

    found = await matcher.candidates(Side.BC, account)  # by number (the server compares without case)
    assert [c["id"] for c in found] == [alpha["id"]]
    assert [c["accountid"] for c in await matcher.candidates(Side.DATAVERSE, beta)] == [twins[0]["accountid"]]

    report = await matcher.couple_all(world.db)
    assert alpha["id"] not in report["unmatched_bc_ids"] and beta["id"] in report["ambiguous_bc_ids"]
    async with world.db.session() as session:
        coupled = await couplings.find(session, "CUSTOMER", Side.BC, alpha["id"])
        assert coupled is not None and coupled.dataverse_id == account["accountid"]
        assert await couplings.find(session, "CUSTOMER", Side.BC, beta["id"]) is None
    again = await matcher.couple_all(world.db)
    assert again["coupled"] == 0 and again["already_coupled"] == report["coupled"] + report["already_coupled"]
