"""The outbox queries, on SQLite and on PostgreSQL."""

import asyncio
from datetime import UTC, datetime, timedelta

from schemas.events import ChangeEvent
from service.store import outbox
from service.store.db import Database
from service.store.migrate import upgrade_async


def event(key: str, entity: str = "account") -> ChangeEvent:
    return ChangeEvent(source="dataverse", entity=entity, record_id="r", change_type="updated",
                       occurred_at=datetime.now(UTC), dedupe_key=key, correlation_id="c")


async def fresh(url: str) -> Database:
    await upgrade_async(url)
    await upgrade_async(url)  # migrating twice is a no-op
    return Database(url)


async def test_store_deduplicates_by_key(database_url: str) -> None:
    db = await fresh(database_url)
    async with db.session() as session:
        assert await outbox.store_events(session, [event("a"), event("b"), event("a")]) == [True, True, False]
    async with db.session() as session:
        assert await outbox.store_events(session, [event("a"), event("c")]) == [False, True]
        assert await outbox.count_pending(session) == 3
    await db.close()


async def test_a_failed_unit_of_work_leaves_nothing(database_url: str) -> None:
    db = await fresh(database_url)
    try:
        async with db.session() as session:
            await outbox.store_events(session, [event("a")])
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    async with db.session() as session:
        assert await outbox.count_pending(session) == 0
    await db.close()


async def test_claim_lease_publish_and_release(database_url: str) -> None:
    db = await fresh(database_url)
    async with db.session() as session:
        await outbox.store_events(session, [event(f"k{i}") for i in range(5)])
    async with db.session() as session:
        first = await outbox.claim_pending(session, 3, lease_seconds=30)
    assert [e.dedupe_key for e in first] == ["k0", "k1", "k2"]
    async with db.session() as session:
        second = await outbox.claim_pending(session, 10, lease_seconds=30)
    assert [e.dedupe_key for e in second] == ["k3", "k4"]  # leased rows are not handed out twice
    async with db.session() as session:
        await outbox.mark_published(session, [e.id for e in first])
        await outbox.release(session, [e.id for e in second], "broker away")
        assert await outbox.count_pending(session) == 2
    async with db.session() as session:
        again = await outbox.claim_pending(session, 10, lease_seconds=30)
    assert [e.dedupe_key for e in again] == ["k3", "k4"]  # released rows come back
    async with db.session() as session:
        await outbox.mark_published(session, [e.id for e in again])
        assert await outbox.count_pending(session) == 0
        assert await outbox.claim_pending(session, 10, lease_seconds=30) == []
    await db.close()


async def test_an_expired_lease_is_claimed_again(database_url: str) -> None:
    db = await fresh(database_url)
    async with db.session() as session:
        await outbox.store_events(session, [event("k")])
    async with db.session() as session:
        assert len(await outbox.claim_pending(session, 10, lease_seconds=0.2)) == 1
    await asyncio.sleep(0.3)  # the claimer died without publishing
    async with db.session() as session:
        assert [e.dedupe_key for e in await outbox.claim_pending(session, 10, lease_seconds=30)] == ["k"]
    await db.close()


async def test_concurrent_claims_never_share_a_row(database_url: str) -> None:
    db = await fresh(database_url)
    async with db.session() as session:
        await outbox.store_events(session, [event(f"k{i}") for i in range(200)])

    async def claimer() -> list[int]:
        ids: list[int] = []
        while True:
            async with db.session() as session:
                batch = await outbox.claim_pending(session, 7, lease_seconds=60)
            if not batch:
                return ids
            ids += [e.id for e in batch]

    results = await asyncio.gather(*(claimer() for _ in range(4)))
    claimed = [i for ids in results for i in ids]
    assert len(claimed) == 200 and len(set(claimed)) == 200
    await db.close()


async def test_purge_forgets_only_old_published_events(database_url: str) -> None:
    db = await fresh(database_url)
    async with db.session() as session:
        await outbox.store_events(session, [event("old"), event("pending")])
        claimed = await outbox.claim_pending(session, 1, lease_seconds=30)
        await outbox.mark_published(session, [claimed[0].id])
    async with db.session() as session:
        assert await outbox.purge_published(session, datetime.now(UTC) - timedelta(days=1)) == 0
        assert await outbox.purge_published(session, datetime.now(UTC) + timedelta(seconds=1)) == 1
        assert await outbox.count_pending(session) == 1
        # the purged key may be stored again: it is past the dedupe window
        assert await outbox.store_events(session, [event("old")]) == [True]
    await db.close()
