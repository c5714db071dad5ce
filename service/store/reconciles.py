"""Reconciliation jobs in the store (`reconcile_job`): asked for by a collection event, run by one worker at a
time under a lease, with their progress for the admin API."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.store.job_models import ReconcileJob
from service.store.outbox import utcnow

WAITING, RUNNING, FINISHED, FAILED = "waiting", "running", "finished", "failed"
T = ReconcileJob.__table__  # type: ignore[attr-defined]


async def request(session: AsyncSession, request_key: str, mapping: str, side: str, filter_: str | None,
                  full: bool, correlation_id: str | None) -> bool:
    """Store a request (once per asking event); False when this event asked already.
    A full reconciliation of the same side that has not started yet covers the new request too."""
    cover: ColumnElement[bool] = col(ReconcileJob.full).is_(True)
    if not full:
        same = col(ReconcileJob.filter).is_(None) if filter_ is None else col(ReconcileJob.filter) == filter_
        cover = or_(cover, same)
    covered = await session.execute(select(col(ReconcileJob.id)).where(
        col(ReconcileJob.mapping) == mapping, col(ReconcileJob.side) == side, col(ReconcileJob.status) == WAITING,
        (col(ReconcileJob.not_before).is_(None)), cover,
    ).limit(1))
    if covered.first() is not None:
        return False
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(T).values(
        request_key=request_key[:400], mapping=mapping, side=side, filter=filter_, full=full, status=WAITING,
        attempt=0, requested_at=utcnow(), updated_at=utcnow(), listed=0, checked=0, failed=0,
        correlation_id=(correlation_id or "")[:200] or None,
    ).on_conflict_do_nothing(index_elements=["request_key"]).returning(T.c.id)
    return (await session.execute(statement)).first() is not None


def _claimable(now: datetime) -> Any:
    waiting = (col(ReconcileJob.status) == WAITING) & (
        col(ReconcileJob.not_before).is_(None) | (col(ReconcileJob.not_before) <= now))
    abandoned = (col(ReconcileJob.status) == RUNNING) & (col(ReconcileJob.lease_until) < now)
    return waiting | abandoned


async def claim(session: AsyncSession, owner: str, lease_seconds: float, held: Collection[str],
                running: Collection[int] = ()) -> ReconcileJob | None:
    """Take the oldest job that may run now (waiting, or running under a lease that ran out: its worker died),
    skipping held mappings; atomically, so one worker wins. Its attempt number grows."""
    now = utcnow()
    query = select(ReconcileJob).where(_claimable(now)).order_by(col(ReconcileJob.id)).limit(20)
    for job in (await session.execute(query)).scalars().all():
        if job.mapping in held or job.id in running or job.id is None:
            continue
        statement = (
            update(ReconcileJob).where(col(ReconcileJob.id) == job.id, _claimable(now))
            .values(status=RUNNING, owner=owner, lease_until=now + timedelta(seconds=lease_seconds),
                    attempt=col(ReconcileJob.attempt) + 1, started_at=now, updated_at=now, listed=0, checked=0,
                    failed=0, message=None)
            .returning(col(ReconcileJob.attempt))
            # The rows were loaded above: SQLAlchemy would evaluate the WHERE on them in Python, where SQLite's
            # times come back naive and cannot be compared with `now`; the row is refreshed below instead.
            .execution_options(synchronize_session=False)
        )
        if (await session.execute(statement)).first() is not None:
            await session.refresh(job)
            return job
    return None


def _owned(job_id: int, owner: str, attempt: int) -> Any:
    return (col(ReconcileJob.id) == job_id) & (col(ReconcileJob.owner) == owner) & (
        col(ReconcileJob.attempt) == attempt) & (col(ReconcileJob.status) == RUNNING)


async def progress(session: AsyncSession, job_id: int, owner: str, attempt: int, lease_seconds: float, *,
                   listed: int, checked: int, failed: int) -> bool:
    """Record the counts so far and renew the lease; False when the job is no longer this worker's."""
    now = utcnow()
    result = await session.execute(update(ReconcileJob).where(_owned(job_id, owner, attempt)).values(
        lease_until=now + timedelta(seconds=lease_seconds), updated_at=now, listed=listed, checked=checked,
        failed=failed))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def finish(session: AsyncSession, job_id: int, owner: str, attempt: int, status: str,
                 message: str | None = None) -> None:
    now = utcnow()
    await session.execute(update(ReconcileJob).where(_owned(job_id, owner, attempt)).values(
        status=status, finished_at=now, updated_at=now, lease_until=None, owner=None,
        message=message[:2000] if message else None))


async def release(session: AsyncSession, job_id: int, owner: str, attempt: int, *, not_before: datetime | None,
                  message: str | None = None) -> None:
    """Give the job back (a hold, a transient failure, the worker stopping): waiting again."""
    now = utcnow()
    await session.execute(update(ReconcileJob).where(_owned(job_id, owner, attempt)).values(
        status=WAITING, owner=None, lease_until=None, not_before=not_before, updated_at=now,
        message=message[:2000] if message else None))


async def recent(session: AsyncSession, mapping: str | None = None, limit: int = 50) -> list[ReconcileJob]:
    query = select(ReconcileJob).order_by(col(ReconcileJob.id).desc()).limit(limit)
    if mapping is not None:
        query = query.where(col(ReconcileJob.mapping) == mapping)
    return list((await session.execute(query)).scalars().all())


async def prune(session: AsyncSession, older_than: datetime) -> None:
    """Finished and failed jobs are kept for a while for the admin API, then removed."""
    await session.execute(delete(ReconcileJob).where(col(ReconcileJob.status).in_([FINISHED, FAILED]),
                                                     col(ReconcileJob.finished_at) < older_than))


def job_json(job: ReconcileJob) -> dict[str, Any]:
    return {
        "id": job.id, "mapping": job.mapping, "side": job.side, "full": job.full, "filter": job.filter,
        "status": job.status, "attempt": job.attempt, "requested_at": job.requested_at,
        "started_at": job.started_at, "finished_at": job.finished_at, "updated_at": job.updated_at,
        "listed": job.listed, "checked": job.checked, "failed": job.failed, "message": job.message,
        "correlation_id": job.correlation_id,
    }
