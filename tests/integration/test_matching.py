"""The matcher against the sandbox: per record (OData equality at the server), per full synchronization line
(the same answers from both sides read by pages, `MatchIndex`) and in bulk ("Generate Integration IDs":
normalised text in memory)."""

from __future__ import annotations

from typing import Any

from schemas.mappings import BY_NAME
from schemas.vocabulary import Side
from service.matching import Matcher, MatchIndex
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


async def test_the_match_index_answers_as_the_server_does_per_record(world: World) -> None:
    """`MatchIndex` (full synchronization: both sides read by pages, matched in memory) finds what
    `Matcher.candidates` finds with one `$filter` query per record and key: the first key with a value that
    finds any decides, equality without case and without trimming, ambiguity kept."""
    mapping = BY_NAME["CUSTOMER"]
    matcher = Matcher(mapping, world.ctx.bc, world.ctx.dv)
    human = world.human

    async def customer(name: str) -> dict[str, Any]:
        return await human.bc_create("customers", {"displayName": name})

    async def account(name: str, number: str | None = None) -> dict[str, Any]:
        return await human.dv_create("accounts", {"name": name, "customertypecode": 3,
                                                  **({"accountnumber": number} if number else {})})

    by_number = await customer("Index By Number")
    await account("Some other name", by_number["number"].lower())  # key 1, other case
    by_name = await customer("Index By Name")
    await account("INDEX BY NAME")  # key 2 (key 1 finds nothing)
    await account(" index by name ")  # not equal: the server does not trim
    twins = await customer("Index Twins")
    await account("Index Twins")
    await account("index twins")  # two match: ambiguous
    first_key = await customer("Index First Key")
    await account("Another name", first_key["number"])  # key 1 decides...
    await account("Index First Key")  # ...so the name's match is not taken
    nothing = await customer("Index Nothing")

    index = MatchIndex(matcher, Side.BC)
    customers = [c async for c in world.ctx.bc.list("customers")]
    before = (await human.dv.get("/requests", params={"limit": 1})).json()["total"]
    for record in customers:
        expected = [a["accountid"] for a in await matcher.candidates(Side.DATAVERSE, record)]
        assert [a["accountid"] for a in await index.candidates(record)] == expected, record["displayName"]
    per_record = (await human.dv.get("/requests", params={"limit": 1})).json()["total"] - before
    assert per_record >= len(customers)  # the per-record answers cost a query each; the index one listing
    answers = {c["id"]: len(await index.candidates(c)) for c in (by_number, by_name, twins, first_key, nothing)}
    assert answers == {by_number["id"]: 1, by_name["id"]: 1, twins["id"]: 2, first_key["id"]: 1, nothing["id"]: 0}
    found = await index.candidates(first_key)
    assert found[0]["accountnumber"] == first_key["number"]

    # the other way round (Sales accounts toward BC), and a record created during the line is found by its key
    toward_bc = MatchIndex(matcher, Side.DATAVERSE)
    accounts = [a async for a in world.ctx.dv.list("accounts")]
    for record in accounts:
        expected = [c["id"] for c in await matcher.candidates(Side.BC, record)]
        assert [c["id"] for c in await toward_bc.candidates(record)] == expected, record["name"]
    newcomer = {"accountid": "x", "name": "Index Newcomer", "accountnumber": None}
    assert await toward_bc.candidates(newcomer) == []
    toward_bc.add(newcomer, "00000000-0000-0000-0000-000000000001")
    assert [c["id"] for c in await toward_bc.candidates({**newcomer, "name": "INDEX NEWCOMER"})] == [
        "00000000-0000-0000-0000-000000000001"]


async def test_the_match_index_reads_each_side_once_by_the_largest_pages(world: World) -> None:
    human = world.human
    assert (await human.bc.post("/seed", json={"customers": 120, "items": 0, "salespeople": 0,
                                               "contactsPerCustomer": 0})).status_code == 200
    customers = [c async for c in world.ctx.bc.list("customers")]
    for record in customers[:30]:
        await human.dv_create("accounts", {"name": f"Pre {record['number']}", "accountnumber": record["number"]})
    index = MatchIndex(Matcher(BY_NAME["CUSTOMER"], world.ctx.bc, world.ctx.dv), Side.BC)
    await human.bc.delete("/requests")
    await human.dv.delete("/requests")
    answers = [await index.candidates(record) for record in customers]
    assert sum(1 for a in answers if a) >= 30
    assert index.kept == sum(1 for a in answers if a)  # only the accounts some customer matches are held
    bc_log = (await human.bc.get("/requests")).json()["value"]
    dv_log = (await human.dv.get("/requests")).json()["value"]
    assert len(bc_log) == 1 and "select=" in bc_log[0]["path"], bc_log  # the customers' key columns only
    assert len(dv_log) == 1 and dv_log[0]["prefer"] == "odata.maxpagesize=5000", dv_log
