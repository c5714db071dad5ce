"""The sync engine: apply one change event exactly once in effect — lease the record (and its coupled
counterpart), let the mapping's rule apply it (consumers/rules/), count the run and write its history entry —
and the orchestration around that: dependencies first, reconciliations, errors, re-driving waiting records.

What a run does to the records is the rule's business (`Rule.apply(run) -> Applied`); the engine never looks
inside. A delete notice is a claim: the engine reads the source before a rule sees it as a delete.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from consumers import errors, outcome
from consumers.coalesce import Coalescer
from consumers.jobs.common import record_event
from consumers.lease import lease_pair
from consumers.rules import build_rules
from consumers.rules.base import Rule
from consumers.rules.context import SyncContext
from consumers.rules.record_run import RecordRun
from schemas.events import ChangeEvent
from schemas.mappings import TableMapping
from schemas.vocabulary import Applied, CoupledPair, Decision, Result, Side
from service.connectors.http import RUN_ID, ApiError
from service.logging import get_logger
from service.metrics import EVENTS_FOLDED, SYNC_LAG
from service.store import couplings, reconciles, synclog
from service.store.models import Coupling
from service.store.outbox import aware

log = get_logger(__name__)

RERUNS = 3  # runs of one event when other runs keep coupling its match meanwhile
PROGRESS_EVERY = 100  # records of a reconciliation between progress reports
Redrive = Callable[[str, str], Awaitable[None]]  # (mapping, event JSON) → put it back on the mapping's queue


@dataclass
class ReconcileCounts:
    listed: int = 0  # records the listing showed
    checked: int = 0  # couplings it did not show, read again (full reconciliations)
    failed: int = 0


Progress = Callable[[ReconcileCounts], Awaitable[None]]


class SyncEngine:
    def __init__(self, ctx: SyncContext, *, redrive: Redrive | None = None, concurrency: int = 16,
                 history_value_chars: int = 500) -> None:
        self.ctx = replace(ctx, sync_dependency=self.sync_dependency)  # rules reach dependencies through it
        self.db = ctx.db
        self.rules: dict[str, Rule] = build_rules(self.ctx)
        self.redrive = redrive
        self.history_value_chars = history_value_chars
        self.slots = asyncio.Semaphore(concurrency)  # runs of live events and reconciliations at once
        self.coalescer = Coalescer(self.slots)  # events of a record already being applied here fold into one re-run
        self.reconcile_requested: Callable[[], Awaitable[None]] | None = None  # wakes the reconcile job runner
        self._events: dict[tuple[str, str, str], list[ChangeEvent]] = {}  # events a record's next pass serves

    async def handle(self, mapping: TableMapping, event: ChangeEvent) -> None:
        """The worker's handler: apply one event; failures are listed and re-raised for a retry."""
        rule = self.rules[mapping.name]
        side = Side.of_source(event.source)
        if not rule.handles(side, event.entity):
            return
        if rule.unavailable:  # setup keeps it off (API not installed, schema problems): nothing to apply
            log.info("event of a mapping that cannot run dropped", mapping=rule.name, reason=rule.unavailable[:300])
            return
        if event.change_type == "collection":
            await self.request_reconcile(rule, side, event)
            return
        assert event.record_id is not None
        record_id = await rule.event_record_id(side, event)  # a line's event concerns its document
        if record_id is None:
            return
        deleted = event.change_type == "deleted" and record_id.lower() == event.record_id.lower()
        key = (rule.name, str(side), record_id.lower())
        self._events.setdefault(key, []).append(event)

        async def run(deleted: bool) -> None:
            events = self._events.pop(key, [])  # a pass serves the events that arrived before it began
            async with self.db.session() as session:  # in the run: only runs take database connections
                skipped = await synclog.is_skipped(session, rule.name, event.source, record_id.lower())
            if skipped:  # failed twice the same way: waits for an operator's retry (admin API)
                return await outcome.record_waiting_for_operator(self.db, rule, side, record_id, events)
            try:
                await self.sync_record(rule, side, record_id, deleted=deleted, events=events)
            except (errors.SyncFailure, ApiError) as exc:
                await outcome.record_error(self.db, rule, side, record_id, exc, event.model_dump_json())
                raise

        absorbed = await self.coalescer.run(key, run, deleted)
        if absorbed:  # events with no run of their own: each run is counted by result, these here
            EVENTS_FOLDED.labels(rule.name).inc(absorbed)

    async def request_reconcile(self, rule: Rule, side: Side, event: ChangeEvent) -> None:
        """A collection event asks for a reconciliation: stored as a job (consumers/jobs/reconcile.py) and the
        event acknowledged at once — a whole-entity run inside one delivery would outlive the broker's
        consumer timeout, and its redelivery would start the run again in parallel."""
        async with self.db.session() as session:
            new = await reconciles.request(session, event.dedupe_key, rule.name, side, event.collection_filter,
                                           bool(event.full_reconcile), event.correlation_id)
        log.info("reconciliation requested", mapping=rule.name, side=side, full=bool(event.full_reconcile), new=new)
        if new and self.reconcile_requested is not None:
            await self.reconcile_requested()

    async def reconcile(self, rule: Rule, side: str, filter_: str | None, full: bool,
                        progress: Progress | None = None) -> ReconcileCounts:
        """Read the changed set (or everything, to find hidden deletes) and apply each record, each in a slot of
        its own (live events never wait long). `progress` runs every PROGRESS_EVERY records (it renews the job's
        lease; it raises to stop the run). Deletes only on evidence: a coupling the listing did not show is read
        again unless it was made while the listing ran, and a delete policy runs only on the source's 404."""
        counts, seen, listing_started = ReconcileCounts(), set[str](), datetime.now(UTC)

        async def one(record_id: str, record: dict[str, Any] | None) -> None:
            try:
                async with self.slots:
                    await self.sync_record(rule, Side(side), record_id, record=record, kind="reconcile")
            except errors.RecordBusy:
                pass  # a live run is applying it right now, from the source as it is
            except (errors.SyncFailure, ApiError) as exc:
                counts.failed += 1
                await outcome.record_error(self.db, rule, Side(side), record_id, exc, None)

        async for record in await rule.records(side, filter_):
            seen.add(record_id := rule.record_id(side, record))
            counts.listed += 1
            await one(record_id, record)
            if progress is not None and counts.listed % PROGRESS_EVERY == 0:
                await progress(counts)
        after = 0
        while full and (batch := await self._couplings_page(rule.name, after)):
            after = batch[-1].id or after
            for coupling in batch:
                record_id = coupling.bc_id if side == Side.BC else coupling.dataverse_id
                if record_id not in seen and aware(coupling.created_at) < listing_started:
                    counts.checked += 1
                    await one(record_id, None)
            if progress is not None:
                await progress(counts)
        return counts

    async def sync_dependency(self, mapping: str, side: str, record_id: str) -> str | None:
        """Synchronize a referenced record first (if its mapping's direction allows); its coupled id."""
        rule, other = self.rules[mapping], Side(side).other
        if rule.unavailable:
            raise errors.MappingUnavailable(f"{mapping} cannot run here ({rule.unavailable[:300]}), so its record "
                                     f"{record_id} cannot be synchronized first", mapping, side, record_id)
        if not rule.creates_toward(other):
            raise errors.MissingDependency(f"{mapping} record {record_id} is not coupled, and {mapping} does not "
                                    f"synchronize toward {other.system}", mapping, side, record_id)
        record = await rule.read(side, record_id)
        if record is None:
            raise errors.MissingDependency(f"{mapping} record {record_id} does not exist", mapping, side, record_id)
        if not rule.included(side, record):
            return None
        applied = await self.sync_record(rule, Side(side), record_id, record=record)
        if applied.other_id is None:
            raise errors.MissingDependency(f"{mapping} record {record_id} could not be coupled", mapping, side,
                                           record_id)
        return applied.other_id

    async def sync_record(self, rule: Rule, side: str, record_id: str, *, deleted: bool = False,
                          record: dict[str, Any] | None = None, kind: str = "live",
                          events: Sequence[ChangeEvent] = ()) -> Applied:
        for _ in range(RERUNS):
            try:
                return await self._sync_once(rule, Side(side), record_id.lower(), deleted, record, kind, events)
            except errors.CoupledMeanwhile:
                continue  # run again, now with the coupling another run saved
        raise errors.RecordBusy(f"{rule.name} {side} {record_id} keeps being coupled by other runs")

    async def _sync_once(self, rule: Rule, side: Side, record_id: str, deleted: bool, record: dict[str, Any] | None,
                         kind: str, events: Sequence[ChangeEvent]) -> Applied:
        started, run_id = time.perf_counter(), uuid.uuid4().hex
        lease, coupling = await lease_pair(self.db, rule.name, side, record_id)
        run = RecordRun(side, record_id, coupling, deleted, record, record is not None, kind, lease, events=events)
        applied: Applied | None = Applied(Result.FAILED, side.other.toward)
        token = RUN_ID.set(run_id)  # sent with each request of the run: the history entry names it
        try:
            applied = await self._apply(rule, run)
        except errors.Skip as exc:
            log.info("record skipped", mapping=rule.name, side=side, record_id=record_id, reason=str(exc))
            other_id = (coupling.bc_id if side.other == Side.BC else coupling.dataverse_id) if coupling else None
            applied = Applied(Result.SKIPPED, side.other.toward, other_id, reason=str(exc),
                              decision=Decision.FILTERED if isinstance(exc, errors.Filtered) else None)
        except (errors.RecordBusy, errors.CoupledMeanwhile) as exc:  # it comes back: nothing to count
            log.info("busy or coupled meanwhile", mapping=rule.name, record_id=record_id, detail=str(exc))
            applied = None
            raise
        except BaseException as exc:  # counted as failed (the caller lists the error and retries)
            assert applied is not None
            applied.reason = outcome.error_message(exc)
            applied.decision = Decision.WAITING if getattr(exc, "waiting_for", None) else None
            raise
        finally:
            RUN_ID.reset(token)
            if applied is None:
                await lease.release()
            else:
                duration_ms = int((time.perf_counter() - started) * 1000)
                entry = outcome.history_entry(rule, run, applied, events, run_id, duration_ms, self.history_value_chars)
                await outcome.record_outcome(self.db, rule, run, applied, entry)
        if applied.result in outcome.WROTE and applied.source_modified:
            SYNC_LAG.labels(rule.name).observe(max(0.0, (datetime.now(UTC) - applied.source_modified).total_seconds()))
        if applied.new_coupling is not None:
            await self._redrive_waiting(applied.new_coupling)
        if applied.follow_up and applied.other_id:
            await self._follow_up(rule, side.other, applied.other_id, applied.follow_up)
        return applied

    async def _apply(self, rule: Rule, run: RecordRun) -> Applied:
        if run.deleted and run.record is None:  # a delete notice is a claim: only the source can say it is gone
            run.record = await rule.read(run.side, run.record_id)
            if run.record is not None:
                log.warning("a delete notice for a record that exists: applied as a change", mapping=rule.name,
                            side=run.side, record_id=run.record_id)
                run.deleted = False
        return await rule.apply(run)

    async def _follow_up(self, rule: Rule, side: Side, record_id: str, fields: list[str]) -> None:
        """Apply `side`'s record again after this run (an event of it on the mapping's queue)."""
        log.info("record changed while it was created; applied again", mapping=rule.name, side=side,
                 record_id=record_id, fields=fields)
        if self.redrive is not None:
            event = record_event(rule, side, record_id, correlation_id=f"follow-up-{rule.name}",
                                 dedupe_key=f"follow-up:{rule.name}:{side}:{record_id}:{datetime.now(UTC).isoformat()}")
            await self.redrive(rule.name, event.model_dump_json())

    async def _redrive_waiting(self, coupling: CoupledPair) -> None:
        """Records that waited for this coupling get their events back on the queue."""
        for mapping, event in await outcome.waiting_events(self.db, coupling) if self.redrive is not None else []:
            await self.redrive(mapping, event)  # type: ignore[misc]

    async def _couplings_page(self, mapping: str, after: int) -> list[Coupling]:
        async with self.db.session() as session:
            return await couplings.list_for(session, mapping, limit=500, after_id=after)

