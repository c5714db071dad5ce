"""Queries of the background jobs: full synchronization runs and lines, catch-up state, the state of the
webhook registrations. Shared by the api (which writes runs and requests) and the worker (which runs them).

Leases: a full synchronization line is leased on its own row (`owner`, `lease_until`, `attempt`); the
singleton jobs (the subscription keeper, one mapping's catch-up) lease a key of `record_lock`
(`job:keeper`, `job:catchup:<mapping>`) through `service.store.locks`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.mappings import BY_NAME, dependency_order
from schemas.vocabulary import RESULTS as COUNTERS
from service.logging import redact_text
from service.store.job_models import CatchUp, FullSyncLine, FullSyncRun, SubscriptionState
from service.store.models import Coupling, MappingConfig
from service.store.outbox import aware, utcnow

READY, IN_PROGRESS, FINISHED, ERROR = "ready", "in_progress", "finished", "error"
LABELS = {READY: "Ready", IN_PROGRESS: "In Progress", FINISHED: "Finished", ERROR: "Error"}
KEEPER_LEASE = "job:keeper"


def control_exchange(namespace: str) -> str:
    """Fanout exchange of the jobs' control messages (`{"kind": "full-sync"|"catch-up"|"keeper"}`); each
    worker binds an exclusive queue to it. Messages only wake workers up: the store holds the work."""
    return f"{namespace}.jobs"


def catch_up_lease(mapping: str) -> str:
    return f"job:catchup:{mapping}"


def full_sync_mappings() -> list[str]:
    """The mappings a full synchronization covers (those with field mappings), in dependency order."""
    return [name for name in dependency_order() if BY_NAME[name].fields]


def catch_up_mappings() -> list[str]:
    """The mappings a catch-up may be asked for (the worker skips those it has no sync rule for)."""
    return dependency_order()


# ---- full synchronization ----------------------------------------------------------------------------------


async def latest_run(session: AsyncSession) -> FullSyncRun | None:
    result = await session.execute(select(FullSyncRun).order_by(col(FullSyncRun.id).desc()).limit(1))
    return result.scalar_one_or_none()


async def run_lines(session: AsyncSession, run_id: int) -> list[FullSyncLine]:
    result = await session.execute(
        select(FullSyncLine).where(col(FullSyncLine.run_id) == run_id).order_by(col(FullSyncLine.position)))
    return list(result.scalars())


def depends(line: FullSyncLine) -> list[str]:
    return list(json.loads(line.depends_on or "[]"))


def blocked(lines: Sequence[FullSyncLine]) -> set[str]:
    """Ready lines that cannot start until a line in Error (directly or further up) is restarted."""
    stuck = {line.mapping for line in lines if line.status == ERROR}
    out: set[str] = set()
    for line in lines:  # lines are in dependency order
        if line.status == READY and any(d in stuck or d in out for d in depends(line)):
            out.add(line.mapping)
    return out


def runnable(lines: Sequence[FullSyncLine]) -> list[FullSyncLine]:
    """Ready lines whose every dependency in the run has Finished."""
    status = {line.mapping: line.status for line in lines}
    return [line for line in lines if line.status == READY
            and all(status.get(d, FINISHED) == FINISHED for d in depends(line))]


def run_status(lines: Sequence[FullSyncLine]) -> str:
    """in_progress while a line runs or can still run; error when only lines in Error (and the lines that
    wait for them) are left; finished when every line finished."""
    if all(line.status == FINISHED for line in lines):
        return FINISHED
    waiting = blocked(lines)
    if any(line.status == IN_PROGRESS or (line.status == READY and line.mapping not in waiting) for line in lines):
        return IN_PROGRESS
    return ERROR


def stuck(line: FullSyncLine, now: datetime | None = None) -> bool:
    """In Progress, but its worker stopped renewing the lease (crashed, killed, cut off)."""
    until = line.lease_until
    if line.status != IN_PROGRESS or until is None:
        return False
    return aware(until) < (now or utcnow())


async def create_run(session: AsyncSession, mappings: Sequence[str], recommendations: dict[str, str]) -> FullSyncRun:
    """A new run with one Ready line per mapping (in dependency order). Dependencies outside the run
    count as satisfied: the engine synchronizes a missing referenced record on demand."""
    now = utcnow()
    run = FullSyncRun(created_at=now)
    session.add(run)
    await session.flush()
    assert run.id is not None
    chosen = set(mappings)
    for position, name in enumerate(n for n in full_sync_mappings() if n in chosen):
        deps = [d for d in BY_NAME[name].depends_on if d in chosen]
        session.add(FullSyncLine(run_id=run.id, mapping=name, position=position, depends_on=json.dumps(deps),
                                 recommendation=recommendations.get(name), status=READY, updated_at=now))
    await session.flush()
    return run


async def claim_line(session: AsyncSession, line_id: int, owner: str, lease_seconds: float) -> int | None:
    """Take a Ready line (atomically: one worker wins); its attempt number, or None when another got it."""
    now = utcnow()
    statement = (
        update(FullSyncLine)
        .where(col(FullSyncLine.id) == line_id, col(FullSyncLine.status) == READY)
        .values(status=IN_PROGRESS, owner=owner, lease_until=now + timedelta(seconds=lease_seconds),
                attempt=col(FullSyncLine.attempt) + 1, started_at=now, finished_at=None, updated_at=now,
                message=None, **dict.fromkeys(COUNTERS, 0))
        .returning(col(FullSyncLine.attempt))
    )
    row = (await session.execute(statement)).first()
    return int(row[0]) if row else None


def _owned(line_id: int, owner: str, attempt: int) -> Any:
    return (col(FullSyncLine.id) == line_id) & (col(FullSyncLine.owner) == owner) & (
        col(FullSyncLine.attempt) == attempt) & (col(FullSyncLine.status) == IN_PROGRESS)


async def progress(session: AsyncSession, line_id: int, owner: str, attempt: int, counts: Counter[str],
                   lease_seconds: float) -> bool:
    """Add a page's counts and renew the lease; False when the line is no longer ours (restarted)."""
    now = utcnow()
    values: dict[str, Any] = {c: getattr(FullSyncLine, c) + counts.get(c, 0) for c in COUNTERS}
    statement = update(FullSyncLine).where(_owned(line_id, owner, attempt)).values(
        lease_until=now + timedelta(seconds=lease_seconds), updated_at=now, **values)
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def finish_line(session: AsyncSession, line_id: int, owner: str, attempt: int, status: str,
                      message: str | None = None) -> bool:
    now = utcnow()
    statement = update(FullSyncLine).where(_owned(line_id, owner, attempt)).values(
        status=status, finished_at=now, updated_at=now, lease_until=None,
        message=message[:2000] if message else None)
    result = await session.execute(statement)
    line = await session.get(FullSyncLine, line_id)
    if line is not None:
        await session.refresh(line)
        lines = await run_lines(session, line.run_id)
        if all(x.status == FINISHED for x in lines):
            await session.execute(update(FullSyncRun).where(col(FullSyncRun.id) == line.run_id).values(finished_at=now))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_line(session: AsyncSession, line_id: int, owner: str, attempt: int) -> bool:
    """A worker stopping (SIGTERM) gives its line back: Ready, so any worker starts it again."""
    statement = update(FullSyncLine).where(_owned(line_id, owner, attempt)).values(
        status=READY, owner=None, lease_until=None, updated_at=utcnow())
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def restart_line(session: AsyncSession, line: FullSyncLine) -> None:
    """"Delete and re-add": the line is Ready again with zero counts; a worker still running the old
    attempt loses its lease at its next page and stops (the next claim makes a new attempt)."""
    now = utcnow()
    line.status, line.owner, line.lease_until, line.message = READY, None, None, None
    line.started_at = line.finished_at = None
    line.updated_at = now
    for counter in COUNTERS:
        setattr(line, counter, 0)
    await session.execute(update(FullSyncRun).where(col(FullSyncRun.id) == line.run_id).values(finished_at=None))
    await session.flush()


def line_json(line: FullSyncLine, now: datetime | None = None) -> dict[str, Any]:
    return {
        "mapping": line.mapping, "position": line.position, "depends_on": depends(line),
        "recommendation": line.recommendation, "status": LABELS.get(line.status, line.status), "state": line.status,
        "stuck": stuck(line, now), "attempt": line.attempt, "worker": line.owner,
        "started_at": _iso(line.started_at), "finished_at": _iso(line.finished_at),
        "updated_at": _iso(line.updated_at), "message": line.message,
        "counts": {c: getattr(line, c) for c in COUNTERS},
    }


def _iso(moment: datetime | None) -> str | None:
    return aware(moment).isoformat() if moment is not None else None


# ---- couplings and mapping configuration ---------------------------------------------------------------------


async def count_couplings(session: AsyncSession, mapping: str) -> int:
    result = await session.execute(select(func.count()).select_from(Coupling).where(col(Coupling.mapping) == mapping))
    return int(result.scalar_one())


async def newest_coupled_change(session: AsyncSession, mapping: str, side: str) -> datetime | None:
    column = col(Coupling.bc_modified) if side == "bc" else col(Coupling.dataverse_modified)
    result = await session.execute(select(func.max(column)).where(col(Coupling.mapping) == mapping))
    value = result.scalar_one_or_none()
    return aware(value) if value is not None else None


async def mapping_config(session: AsyncSession, mapping: str) -> tuple[dict[str, Any], bool]:
    """The operator's configuration of a mapping (JSON object) and whether it is on hold."""
    row = await session.get(MappingConfig, mapping)
    if row is None:
        return {}, False
    try:
        config = json.loads(row.config or "{}")
    except ValueError:
        config = {}
    return (config if isinstance(config, dict) else {}), bool(row.on_hold)


def reconcile_minutes(config: dict[str, Any], default: float) -> float:
    """`config["reconcile_minutes"]` when it is a number ≥ 0, else the default (BCSYNC_RECONCILE_MINUTES)."""
    value = config.get("reconcile_minutes")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return float(default)


# ---- catch-up ------------------------------------------------------------------------------------------------


async def catch_up_state(session: AsyncSession, mapping: str) -> CatchUp:
    row = await session.get(CatchUp, mapping)
    if row is None:
        row = CatchUp(mapping=mapping)
        session.add(row)
        await session.flush()
    return row


async def catch_up_states(session: AsyncSession) -> dict[str, CatchUp]:
    return {row.mapping: row for row in (await session.execute(select(CatchUp))).scalars()}


async def request_catch_up(session: AsyncSession, mappings: Iterable[str]) -> None:
    """Run these mappings' catch-up at the next opportunity (whatever their schedule)."""
    now = utcnow()
    for mapping in dict.fromkeys(mappings):
        row = await catch_up_state(session, mapping)
        row.requested_at = now
    await session.flush()


def catch_up_json(row: CatchUp) -> dict[str, Any]:
    return {"mapping": row.mapping, "bc_watermark": _iso(row.bc_watermark),
            "dataverse_watermark": _iso(row.dataverse_watermark), "last_run_at": _iso(row.last_run_at),
            "next_run_at": _iso(row.next_run_at), "requested_at": _iso(row.requested_at), "runs": row.runs,
            "last_found": row.last_found, "last_error": row.last_error}


# ---- webhook registration state ------------------------------------------------------------------------------


async def save_subscription_state(session: AsyncSession, key: str, **values: Any) -> None:
    if isinstance(values.get("error"), str):
        values["error"] = redact_text(values["error"])  # shown by GET /admin/subscriptions
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = SubscriptionState.__table__  # type: ignore[attr-defined]
    statement = insert(table).values(key=key, **values)
    statement = statement.on_conflict_do_update(index_elements=["key"], set_=values)
    await session.execute(statement)


async def forget_subscription_states(session: AsyncSession, keys: Iterable[str]) -> None:
    """Drop the states of registrations no longer wanted (a BC side now polled, a mapping kept off)."""
    for key in keys:
        row = await session.get(SubscriptionState, key)
        if row is not None:
            await session.delete(row)


async def subscription_states(session: AsyncSession) -> list[SubscriptionState]:
    result = await session.execute(select(SubscriptionState).order_by(col(SubscriptionState.key)))
    return list(result.scalars())


def subscription_json(row: SubscriptionState) -> dict[str, Any]:
    return {"system": row.system, "resource": row.resource, "id": row.subscription_id,
            "expires_at": _iso(row.expires_at), "status": row.status, "last_check": _iso(row.last_check),
            "last_change": _iso(row.last_change), "error": row.error}
