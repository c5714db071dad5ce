"""The record history's store (service/store/history.py), on SQLite and on PostgreSQL: a pair's entries by either
id and paged, search across mappings, pruning by age; and the table as the migration makes it is the model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from schemas.vocabulary import Decision, FieldChange, Result, Side
from service.store import couplings, history
from service.store.db import Database
from service.store.migrate import upgrade_async
from service.store.models import RecordHistory

BC = "5f1e0000-0000-0000-0000-00000000000a"
DV = "8a2c0000-0000-0000-0000-00000000000b"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def make(side: Side = Side.BC, record_id: str = BC, *, bc_id: str | None = None, dataverse_id: str | None = None,
         mapping: str = "CUSTOMER", at: datetime = T0, decision: Decision = Decision.APPLIED,
         label: str | None = "10000 Adatum Corporation", terms: tuple[str, ...] = ("10000", "info@adatum.example"),
         **more: Any) -> RecordHistory:
    row = history.entry(mapping=mapping, side=side, record_id=record_id, bc_id=bc_id, dataverse_id=dataverse_id,
                        kind="live", result=Result.MODIFIED, decision=decision, reason=None, events=[],
                        changes=[FieldChange(Side.DATAVERSE, "telephone1", "1", "2")], sensitive=(),
                        correlation_id="c-1", duration_ms=12, label=label, terms=terms, **more)
    row.at = at
    return row


async def fresh(url: str) -> Database:
    await upgrade_async(url)
    return Database(url)


async def store(db: Database, *rows: RecordHistory) -> list[int]:
    async with db.session() as session:
        session.add_all(rows)
        await session.flush()
        return [r.id for r in rows if r.id is not None]


async def test_the_migrated_table_is_the_model(database_url: str) -> None:
    await upgrade_async(database_url)
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(lambda c: compare_metadata(
            MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata))
    await engine.dispose()

    assert [d for d in diff if "record_history" in repr(d)] == []


async def test_a_pair_is_found_by_either_id_newest_first_and_paged(database_url: str) -> None:
    db = await fresh(database_url)
    # Before the coupling the first entry knew only the BC id; then both; then a Dataverse-side entry.
    ids = await store(db, make(at=T0, decision=Decision.CREATED),
                      make(at=T0 + timedelta(minutes=2), bc_id=BC, dataverse_id=DV),
                      make(Side.DATAVERSE, DV.upper(), bc_id=BC, at=T0 + timedelta(minutes=1)),
                      make(at=T0 + timedelta(minutes=3), mapping="CONTACT"),  # another mapping
                      make(record_id="ffff0000-0000-0000-0000-000000000000", at=T0 + timedelta(minutes=4)))
    async with db.session() as session:
        by_both = await history.for_pair(session, "CUSTOMER", {BC, DV}, limit=10, before_id=None)
        by_dataverse = await history.for_pair(session, "CUSTOMER", [DV.upper()], limit=10, before_id=None)
        page1 = await history.for_pair(session, "CUSTOMER", {BC, DV}, limit=2, before_id=None)
        page2 = await history.for_pair(session, "CUSTOMER", {BC, DV}, limit=2, before_id=page1[-1].id)
        nothing = await history.for_pair(session, "CUSTOMER", [], limit=10, before_id=None)
    assert [r.id for r in by_both] == [ids[1], ids[2], ids[0]]  # by `at`, not by id
    assert [r.id for r in by_dataverse] == [ids[1], ids[2]]
    assert [r.id for r in page1] + [r.id for r in page2] == [ids[1], ids[2], ids[0]]
    assert nothing == []
    async with db.session() as session:
        as_bc = await history.for_ids(session, "CUSTOMER", bc_ids=[DV], dataverse_ids=None, limit=10, before_id=None)
        as_dataverse = await history.for_ids(session, "CUSTOMER", bc_ids=(), dataverse_ids=[DV.upper()], limit=10,
                                             before_id=None)
        by_side = await history.for_ids(session, "CUSTOMER", bc_ids=[BC], dataverse_ids=[DV], limit=10,
                                        before_id=ids[2])
    assert as_bc == []  # a Dataverse id is not looked for among BC ids
    assert [r.id for r in as_dataverse] == [ids[1], ids[2]]
    assert [r.id for r in by_side] == [ids[0]]
    assert by_both[2].bc_id == BC and by_both[2].dataverse_id is None  # the source's id, lower-case
    assert by_both[1].dataverse_id == DV and by_both[1].bc_id == BC
    await db.close()


async def test_entries_at_the_same_time_page_by_id(database_url: str) -> None:
    db = await fresh(database_url)
    ids = await store(db, *(make(at=T0) for _ in range(5)))
    seen: list[int] = []
    before = None
    async with db.session() as session:
        for _ in range(5):  # a page that repeats an entry would loop forever
            page = await history.for_pair(session, "CUSTOMER", [BC], limit=2, before_id=before)
            if not page:
                break
            seen += [r.id for r in page if r.id is not None]
            before = page[-1].id
    assert seen == sorted(ids, reverse=True)
    await db.close()


async def test_search_by_name_number_email_or_id_one_hit_per_pair(database_url: str) -> None:
    db = await fresh(database_url)
    other_bc = "6e2f0000-0000-0000-0000-00000000000c"
    coupled_bc, coupled_dv = "7a000000-0000-0000-0000-00000000000d", "7b000000-0000-0000-0000-00000000000e"
    await store(db, make(at=T0, label="10000 Adatum Corp", terms=("10000",)),  # the old name, BC id only
                make(at=T0 + timedelta(minutes=1), bc_id=BC, dataverse_id=DV, label="10000 Adatum Corporation",
                     decision=Decision.ECHO),
                make(record_id=other_bc, at=T0 + timedelta(minutes=2), label="20000 Trey 100% Research_Lab",
                     terms=("20000", "trey@example.com")),
                make(Side.DATAVERSE, DV, mapping="CONTACT", label="Adatum contact", terms=(), at=T0))
    async with db.session() as session:
        await couplings.save(session, "CUSTOMER", BC, DV)
        await couplings.save(session, "ITEM-PRODUCT", coupled_bc, coupled_dv)  # coupled, no history yet
    async with db.session() as session:
        adatum = await history.search(session, "  ADATUM ", limit=50)
        by_old_name = await history.search(session, "adatum corp", limit=50)
        by_number = await history.search(session, "10000", limit=50)
        by_email = await history.search(session, "TREY@example.COM", limit=50)
        by_id = await history.search(session, DV.upper(), limit=50)
        by_coupling = await history.search(session, coupled_dv, limit=50)
        percent = await history.search(session, "%", limit=50)
        underscore = await history.search(session, "100% research_l", limit=50)
        wildcard = await history.search(session, "t_ey", limit=50)
        limited = await history.search(session, "adatum", limit=1)
        blank = await history.search(session, "   ", limit=50)
    customer = history.Hit("CUSTOMER", BC, DV, "10000 Adatum Corporation", "echo", T0 + timedelta(minutes=1), True)
    contact = history.Hit("CONTACT", None, DV, "Adatum contact", "applied", T0, False)
    assert adatum == [customer, contact]  # the BC-only entry joined its pair through the coupling
    assert by_old_name == [customer]  # found by a former name; shows the latest
    assert by_number == [customer]
    assert [(h.mapping, h.bc_id, h.label) for h in by_email] == [("CUSTOMER", other_bc, "20000 Trey 100% Research_Lab")]
    assert by_id == [customer, contact]
    assert by_coupling == [history.Hit("ITEM-PRODUCT", coupled_bc, coupled_dv, None, None, None, True)]
    assert [h.bc_id for h in percent] == [other_bc]  # % is a plain character
    assert [h.bc_id for h in underscore] == [other_bc]
    assert wildcard == []  # _ is a plain character
    assert limited == [customer]
    assert blank == []
    await db.close()


async def test_prune_deletes_the_oldest_in_batches(database_url: str) -> None:
    db = await fresh(database_url)
    now = datetime.now(UTC)
    old = await store(db, *(make(at=now - timedelta(days=31, minutes=i)) for i in range(7)))
    young = await store(db, make(at=now - timedelta(days=29)), make(at=now))
    cut = now - timedelta(days=30)
    async with db.session() as session:
        first = await history.prune(session, cut, 5)
    async with db.session() as session:
        left = await history.for_pair(session, "CUSTOMER", [BC], limit=100, before_id=None)
    assert first == 5
    # The oldest went first: what is left of the old ones are the two youngest of them.
    assert sorted(r.id for r in left) == sorted([*old[:2], *young])
    async with db.session() as session:
        assert await history.prune(session, cut, 5) == 2
    async with db.session() as session:
        assert await history.prune(session, cut, 5) == 0
        left = await history.for_pair(session, "CUSTOMER", [BC], limit=100, before_id=None)
    assert sorted(r.id for r in left) == sorted(young)
    await db.close()


async def test_search_joins_an_uncoupled_pairs_entries_and_shows_its_latest_label(database_url: str) -> None:
    db = await fresh(database_url)
    # The coupling was removed (or never stored): an entry that knew only the BC id, then one that knew both,
    # then a failure that read nothing (no label).
    await store(db, make(at=T0, label="10000 Adatum", terms=("adatum",)),
                make(at=T0 + timedelta(minutes=1), bc_id=BC, dataverse_id=DV, label="10000 Adatum Corporation"),
                make(Side.DATAVERSE, DV, bc_id=BC, at=T0 + timedelta(minutes=2), label=None, terms=(),
                     decision=Decision.FAILED))
    async with db.session() as session:
        hits = await history.search(session, "adatum", limit=50)
    assert hits == [history.Hit("CUSTOMER", BC, DV, "10000 Adatum Corporation", "failed", T0 + timedelta(minutes=2),
                                False)]
    await db.close()
