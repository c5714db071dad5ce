"""Outbox queries: store accepted events (deduplicated), claim a batch to relay, mark the outcome.

Claiming sets a short lease instead of holding a transaction open while publishing, so several
relays (api replicas, workers) can share one table: on PostgreSQL the claim skips rows another relay
has locked (`FOR UPDATE SKIP LOCKED`); on SQLite the database-wide write lock serializes claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import ChangeEvent
from service.store.models import OutboxEvent

T = OutboxEvent.__table__  # type: ignore[attr-defined]


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """A time read back from the store as UTC (SQLite returns it without its zone)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PendingEvent:
    id: int
    routing_key: str
    source: str
    entity: str
    dedupe_key: str
    correlation_id: str
    payload: str


async def store_events(session: AsyncSession, events: Sequence[ChangeEvent]) -> list[bool]:
    """Insert events not seen before (by dedupe key) in one statement; returns, per event, whether it was new."""
    if not events:
        return []
    insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    now = utcnow()
    rows = [
        {"dedupe_key": e.dedupe_key, "routing_key": e.routing_key, "source": e.source, "entity": e.entity,
         "correlation_id": e.correlation_id, "payload": e.model_dump_json(), "created_at": now, "attempts": 0}
        for e in events
    ]
    # One cached statement run as executemany: SQLAlchemy batches it into multi-row INSERTs with RETURNING.
    statement = insert(T).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(T.c.dedupe_key)
    inserted = set((await session.execute(statement, rows)).scalars())
    new: list[bool] = []
    for event in events:  # a key twice in one batch: only its first occurrence is new
        new.append(event.dedupe_key in inserted)
        inserted.discard(event.dedupe_key)
    return new


async def claim_pending(session: AsyncSession, limit: int, lease_seconds: float) -> list[PendingEvent]:
    """Lease up to `limit` unpublished events (oldest first) to this relay."""
    now = utcnow()
    candidates = (
        select(T.c.id)
        .where(T.c.published_at.is_(None), or_(T.c.claimed_until.is_(None), T.c.claimed_until < now))
        .order_by(T.c.id)
        .limit(limit)
    )
    if _dialect(session) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    statement = (
        update(T)
        .where(T.c.id.in_(candidates.scalar_subquery()))
        .values(claimed_until=now + timedelta(seconds=lease_seconds), attempts=T.c.attempts + 1)
        .returning(T.c.id, T.c.routing_key, T.c.source, T.c.entity, T.c.dedupe_key, T.c.correlation_id,
                   T.c.payload)
    )
    rows = (await session.execute(statement)).all()
    return sorted((PendingEvent(*row) for row in rows), key=lambda e: e.id)


async def mark_published(session: AsyncSession, ids: Sequence[int]) -> None:
    if ids:
        await session.execute(
            update(T).where(T.c.id.in_(ids)).values(published_at=utcnow(), claimed_until=None, last_error=None)
        )


async def release(session: AsyncSession, ids: Sequence[int], error: str) -> None:
    """Give claimed events back (publishing failed) so that the next round retries them."""
    if ids:
        await session.execute(
            update(T).where(T.c.id.in_(ids)).values(claimed_until=None, last_error=error[:1000])
        )


async def count_pending(session: AsyncSession) -> int:
    result = await session.execute(select(func.count()).select_from(T).where(T.c.published_at.is_(None)))
    return int(result.scalar_one())


async def purge_published(session: AsyncSession, older_than: datetime) -> int:
    """Forget published events past the dedupe window."""
    result = await session.execute(
        delete(T).where(T.c.published_at.is_not(None), T.c.published_at < older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
