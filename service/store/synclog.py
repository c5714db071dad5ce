"""The sync job log (counters per mapping, direction and run) and the error list."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.vocabulary import RESULTS
from service.logging import redact_text
from service.store.models import SyncError, SyncJob
from service.store.outbox import utcnow

J = SyncJob.__table__  # type: ignore[attr-defined]


async def count(session: AsyncSession, mapping: str, direction: str, kind: str, bucket: str,
                counts: Counter[str]) -> None:
    """Add counters to the job's log entry (created on first use)."""
    values = {r: counts.get(r, 0) for r in RESULTS}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    statement = insert(J).values(mapping=mapping, direction=direction, kind=kind, bucket=bucket, started_at=now,
                                 finished_at=now, **values)
    statement = statement.on_conflict_do_update(
        index_elements=["mapping", "direction", "kind", "bucket"],
        set_={"finished_at": now, **{r: getattr(J.c, r) + statement.excluded[r] for r in RESULTS}},
    )
    await session.execute(statement)


async def record_error(session: AsyncSession, mapping: str, source: str, source_id: str, message: str, *,
                       destination_id: str | None = None, event: str | None = None,
                       waiting_for: str | None = None, transient: bool = False) -> SyncError:
    """Open (or bump) the error of one record; the second identical failure marks it skipped, unless the
    record waits for a dependency or the failure was `transient` (a service unavailable or throttling: the
    record is fine, and skipping it would drop its later changes while the retry path would apply them)."""
    message = redact_text(message)  # shown by GET /admin/errors
    now = utcnow()
    query = select(SyncError).where(col(SyncError.mapping) == mapping, col(SyncError.source) == source,
                                    col(SyncError.source_id) == source_id)
    existing = (await session.execute(query)).scalar_one_or_none()
    if existing is None:
        existing = SyncError(mapping=mapping, source=source, source_id=source_id, destination_id=destination_id,
                             message=message[:2000], event=event, first_seen=now, last_seen=now,
                             waiting_for=waiting_for)
        session.add(existing)
    else:
        existing.attempts += 1
        existing.last_seen = now
        existing.destination_id = destination_id or existing.destination_id
        existing.event = event or existing.event
        same_again = (existing.state == "open" and existing.message == message[:2000] and waiting_for is None
                      and not transient)
        existing.state = "skipped" if same_again else ("open" if existing.state == "resolved" else existing.state)
        existing.message = message[:2000]
        existing.waiting_for = waiting_for
    await session.flush()
    return existing


async def resolve_errors(session: AsyncSession, mapping: str, source: str, source_id: str) -> None:
    """The record synchronized: its open error (if any) is resolved."""
    await session.execute(update(SyncError).where(
        col(SyncError.mapping) == mapping, col(SyncError.source) == source, col(SyncError.source_id) == source_id,
        col(SyncError.state) != "resolved").values(state="resolved", last_seen=utcnow()))


async def open_errors(session: AsyncSession, mapping: str | None = None) -> list[SyncError]:
    query = select(SyncError).where(col(SyncError.state) != "resolved").order_by(col(SyncError.id))
    if mapping:
        query = query.where(col(SyncError.mapping) == mapping)
    return list((await session.execute(query)).scalars())


async def waiting_on(session: AsyncSession, keys: list[str]) -> list[SyncError]:
    """Open errors of records that wait for one of these dependencies (`<mapping>:<side>:<id>`)."""
    query = select(SyncError).where(col(SyncError.waiting_for).in_(keys), col(SyncError.state) != "resolved")
    return list((await session.execute(query)).scalars())


async def list_errors(session: AsyncSession, mapping: str | None, state: str | None, limit: int,
                      after_id: int = 0) -> list[SyncError]:
    query = select(SyncError).where(col(SyncError.id) > after_id)
    if mapping:
        query = query.where(col(SyncError.mapping) == mapping)
    query = query.where(col(SyncError.state) == state) if state else query.where(col(SyncError.state) != "resolved")
    return list((await session.execute(query.order_by(col(SyncError.id)).limit(limit))).scalars())


async def is_skipped(session: AsyncSession, mapping: str, source: str, source_id: str) -> bool:
    query = select(col(SyncError.id)).where(col(SyncError.mapping) == mapping, col(SyncError.source) == source,
                                       col(SyncError.source_id) == source_id, col(SyncError.state) == "skipped")
    return (await session.execute(query)).first() is not None


async def list_jobs(session: AsyncSession, mapping: str | None, kind: str | None, limit: int) -> list[SyncJob]:
    query = select(SyncJob)
    if mapping:
        query = query.where(col(SyncJob.mapping) == mapping)
    if kind:
        query = query.where(col(SyncJob.kind) == kind)
    return list((await session.execute(query.order_by(col(SyncJob.finished_at).desc()).limit(limit))).scalars())


async def open_error_counts(session: AsyncSession) -> dict[str, int]:
    query = (select(col(SyncError.mapping), func.count()).where(col(SyncError.state).in_(["open", "skipped"]))
             .group_by(col(SyncError.mapping)))
    return {mapping: int(n) for mapping, n in (await session.execute(query)).all()}


async def last_success(session: AsyncSession) -> dict[str, str]:
    """When each mapping last wrote something (the newest job log entry with a write or a coupling)."""
    wrote = (col(SyncJob.inserted) + col(SyncJob.modified) + col(SyncJob.deleted) + col(SyncJob.coupled)) > 0
    query = select(col(SyncJob.mapping), func.max(col(SyncJob.finished_at))).where(wrote).group_by(col(SyncJob.mapping))
    return {mapping: when.isoformat() for mapping, when in (await session.execute(query)).all() if when}


async def totals(session: AsyncSession) -> dict[tuple[str, str, str], float]:
    """Every (mapping, direction, result) counter of the job log, summed over runs."""
    query = select(col(SyncJob.mapping), col(SyncJob.direction),
                   *(func.sum(getattr(J.c, r)) for r in RESULTS)).group_by(col(SyncJob.mapping), col(SyncJob.direction))
    out: dict[tuple[str, str, str], float] = {}
    for mapping, direction, *sums in (await session.execute(query)).all():
        for result, value in zip(RESULTS, sums, strict=True):
            out[(mapping, direction, result)] = float(value or 0)
    return out
