"""What one run of one record leaves behind: its lease given back, its count, its error resolved and its history
entry — in one transaction, so that the record history never misses a counted run nor lists one that was not —
and, on failure, its entry in the error list; records that waited for a new coupling."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from consumers.rules.base import Rule
from consumers.rules.record_run import RecordRun
from schemas.events import ChangeEvent
from schemas.mappings import sensitive_fields
from schemas.vocabulary import Applied, CoupledPair, Decision, Result, Side
from service.connectors.http import ApiError, is_transient
from service.logging import get_logger
from service.metrics import SYNC_RECORDS
from service.store import couplings, history, synclog
from service.store.db import Database
from service.store.models import RecordHistory

log = get_logger(__name__)
WROTE = (Result.INSERTED, Result.MODIFIED, Result.COUPLED)  # the results whose lag is measured


def event_view(event: ChangeEvent) -> dict[str, Any]:
    return {"event_id": event.event_id, "source": event.source, "change_type": event.change_type,
            "correlation_id": event.correlation_id, "received_at": event.received_at.isoformat(),
            "occurred_at": event.occurred_at.isoformat()}


def history_entry(rule: Rule, run: RecordRun, applied: Applied, events: Sequence[ChangeEvent], run_id: str,
                  duration_ms: int, value_chars: int) -> RecordHistory:
    side, other = run.side, run.side.other
    coupling = applied.new_coupling or run.coupling
    ids: dict[Side, str | None] = {side: run.record_id, other: applied.other_id}
    if coupling is not None and ids[other] is None:
        ids[other] = coupling.bc_id if other is Side.BC else coupling.dataverse_id
    # An echo told without a read has no record: the coupling's kept state names it (its label and search terms).
    record = run.record or (couplings.state(run.coupling, side.value) if run.coupling is not None else None)
    label, terms = rule.describe(record) if record else (None, [])
    if run.target:
        other_label, other_terms = rule.describe(run.target)
        label, terms = label or other_label, terms + other_terms
    return history.entry(
        mapping=rule.name, side=side, record_id=run.record_id, bc_id=ids[Side.BC], dataverse_id=ids[Side.DATAVERSE],
        kind=run.kind, result=applied.result, decision=applied.decided(), reason=applied.reason,
        events=[event_view(e) for e in events], changes=applied.changes, sensitive=sensitive_fields(rule.mapping),
        correlation_id=run_id, duration_ms=duration_ms, label=label,
        terms=[t for t in (*terms, *(i for i in ids.values() if i)) if t], value_chars=value_chars,
        lag_ms=lag_ms(applied))


def lag_ms(applied: Applied) -> int | None:
    """A write's lag (the same measure as bcsync_sync_lag_seconds): from the source's modified time to now."""
    if applied.result not in WROTE or applied.source_modified is None:
        return None
    return max(0, int((datetime.now(UTC) - applied.source_modified).total_seconds() * 1000))


async def record_outcome(db: Database, rule: Rule, run: RecordRun, applied: Applied, entry: RecordHistory) -> None:
    """Give the lease back with the count, the error's resolution and the history entry (one transaction)."""
    try:
        async with db.session() as session:
            await run.lease.release(session)
            await synclog.count(session, rule.name, applied.direction, run.kind, _bucket(run.kind),
                                Counter({str(applied.result): 1}))
            if applied.result != Result.FAILED:
                await synclog.resolve_errors(session, rule.name, run.side.source, run.record_id)
            session.add(entry)
    except Exception:
        with contextlib.suppress(Exception):  # give the record back at least (else: in 20 s)
            await run.lease.release()
        raise
    SYNC_RECORDS.labels(rule.name, applied.direction, str(applied.result)).inc()


async def record_waiting_for_operator(db: Database, rule: Rule, side: Side, record_id: str,
                                     events: Sequence[ChangeEvent]) -> None:
    """A record the error list marks skipped (failed twice the same way) is not run: its events are, in the history."""
    entry = history.entry(
        mapping=rule.name, side=side, record_id=record_id, bc_id=None, dataverse_id=None, kind="live",
        result=Result.SKIPPED, decision=Decision.SKIPPED, events=[event_view(e) for e in events], changes=[],
        reason="not applied: it failed twice the same way and waits for an operator's retry (the error list)",
        sensitive=(), correlation_id=None, duration_ms=0, label=None, terms=[record_id])
    async with db.session() as session:
        session.add(entry)
    SYNC_RECORDS.labels(rule.name, side.other.toward, "skipped").inc()


async def record_error(db: Database, rule: Rule, side: Side, record_id: str, error: Exception,
                       event: str | None) -> None:
    """List the record's failure in the error list (with its event, for an operator's retry)."""
    message = error_message(error)
    async with db.session() as session:
        await synclog.record_error(session, rule.name, side.source, record_id, message, event=event,
                                   waiting_for=getattr(error, "waiting_for", None), transient=is_transient(error))
    log.warning("record failed", mapping=rule.name, side=side, record_id=record_id, error=message[:300])


async def waiting_events(db: Database, coupling: CoupledPair) -> list[tuple[str, str]]:
    """(mapping, event JSON) of the records that waited for this coupling: they go back on their queue."""
    keys = [f"{coupling.mapping}:bc:{coupling.bc_id}", f"{coupling.mapping}:dataverse:{coupling.dataverse_id}"]
    async with db.session() as session:
        waiting = await synclog.waiting_on(session, keys)
    for error in waiting:
        if error.event:
            log.info("re-driving a record that waited", mapping=error.mapping, record_id=error.source_id)
    return [(error.mapping, error.event) for error in waiting if error.event]


def error_message(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return f"{error.status} {error.code}: {error.message}"
    return str(error) or type(error).__name__


def _bucket(kind: str) -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:00Z") if kind == "live" else datetime.now(UTC).strftime("%Y-%m-%d")
