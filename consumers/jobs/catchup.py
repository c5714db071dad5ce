"""Catch-up ("No. of minutes between runs"): per mapping, read the records changed since a watermark on
each source side and publish them as ordinary change events.

Why events and not the engine directly: the events go through the outbox to the mapping's queue like a
webhook's, so a mapping on hold keeps them waiting (and resume applies them in order with the live ones),
failures are retried and dead-lettered by the normal path, and every worker shares the work. The dedupe
key holds the record's modified time and the run, so a run publishes a record version once, and the next run
publishes it again if it is still not synchronized (its earlier event may have been dead-lettered).
Our own writes come back in the changed set too; the engine finds them unchanged (hash), at one read each.

Watermark: per mapping and side, the newest source modified time seen (the source system's clock, not
ours); a run reads from `watermark - overlap` (BC `lastModifiedDateTime gt`, Dataverse `modifiedon ge`).
The first run starts at the newest coupled change of that side, else `minutes` ago.
Hidden deletes: every `full_reconcile_every`-th run of a mapping also publishes one unfiltered
`collection` event per side with `full_reconcile`; the engine then reads everything and removes couplings
whose record is gone (as for BC's own unfiltered collection notifications).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from consumers.jobs.common import entity_of, odata_time, record_event
from consumers.jobs.settings import JobSettings
from consumers.rules.base import Rule
from consumers.sync import SyncEngine
from schemas.events import ChangeEvent
from schemas.vocabulary import Side
from service.logging import get_logger
from service.settings import Settings
from service.store import couplings, jobs, locks, outbox
from service.store.db import Database
from service.store.outbox import aware, utcnow

log = get_logger(__name__)
BATCH = 200
LEASE_SECONDS = 600.0


class CatchUpJob:
    def __init__(self, db: Database, engine: SyncEngine, settings: Settings, job_settings: JobSettings) -> None:
        self.db, self.engine, self.settings, self.job_settings = db, engine, settings, job_settings

    async def tick(self) -> None:
        """Run every mapping whose catch-up is due (its interval passed, or it was requested)."""
        now = utcnow()
        async with self.db.session() as session:
            states = await jobs.catch_up_states(session)
            configs = {name: (await jobs.mapping_config(session, name))[0] for name in jobs.catch_up_mappings()}
        for name in jobs.catch_up_mappings():
            state = states.get(name)
            if name in self.engine.rules and self.engine.rules[name].unavailable:
                if state is not None and state.requested_at is not None:  # (e.g. asked for by the BC door)
                    await self._not_run(name, f"{name} cannot run here: {self.engine.rules[name].unavailable}")
                continue  # setup keeps it off
            if name not in self.engine.rules:
                if state is not None and state.requested_at is not None:
                    await self._not_run(name, f"{name} has no sync rule in this worker: nothing to catch up")
                continue
            minutes = jobs.reconcile_minutes(configs[name], self.settings.reconcile_minutes)
            requested = state is not None and state.requested_at is not None
            scheduled = minutes > 0 and (state is None or state.next_run_at is None
                                         or aware(state.next_run_at) <= now)
            if requested or scheduled:
                await self.run_mapping(name, minutes)

    async def _not_run(self, name: str, why: str) -> None:
        """A requested catch-up that will not run: cleared, with the reason to show."""
        async with self.db.session() as session:
            state = await jobs.catch_up_state(session, name)
            state.requested_at = None
            state.last_error = why[:2000]

    async def run_mapping(self, name: str, minutes: float | None = None) -> int | None:
        """One catch-up of one mapping; the number of events published (None: another worker runs it)."""
        if minutes is None:
            async with self.db.session() as session:
                config, _ = await jobs.mapping_config(session, name)
            minutes = jobs.reconcile_minutes(config, self.settings.reconcile_minutes)
        owner, key = uuid.uuid4().hex, jobs.catch_up_lease(name)
        async with self.db.session() as session:
            if not await locks.acquire(session, [key], owner, LEASE_SECONDS):
                return None
        started = utcnow()
        found = 0
        try:
            async with self.db.session() as session:
                state = await jobs.catch_up_state(session, name)
                marks = {"bc": state.bc_watermark, "dataverse": state.dataverse_watermark}
                runs = state.runs + 1
            rule = self.engine.rules[name]
            sides = rule.catch_up_sides()
            for side in sides:
                since = await self.since(rule, side, marks[side], minutes)
                found_side, marks[side] = await self.publish_changes(rule, side, since, f"catchup-{name}-{runs}")
                found += found_side
            every = self.job_settings.full_reconcile_every
            full = bool(every) and runs % every == 0
            if full:
                await self._full_reconcile(rule, sides, runs)
            async with self.db.session() as session:
                state = await jobs.catch_up_state(session, name)
                state.bc_watermark, state.dataverse_watermark = marks["bc"], marks["dataverse"]
                state.last_run_at, state.runs, state.last_found, state.last_error = started, runs, found, None
                state.next_run_at = started + timedelta(minutes=minutes) if minutes > 0 else None
                if state.requested_at is not None and aware(state.requested_at) <= started:
                    state.requested_at = None
            log.info("catch-up done", mapping=name, events=found, run=runs, full_reconcile=full)
            return found
        except Exception as exc:
            log.error("catch-up failed", mapping=name, error=str(exc)[:500])
            async with self.db.session() as session:
                state = await jobs.catch_up_state(session, name)
                state.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                state.last_run_at = started
                state.next_run_at = started + timedelta(minutes=minutes or 1)
                state.requested_at = None
            return found
        finally:
            async with self.db.session() as session:
                await locks.release(session, [key], owner)

    async def since(self, rule: Rule, side: str, mark: datetime | None, minutes: float) -> datetime:
        """Where a read of the side's changes starts: the watermark (else the newest coupled change, else
        `minutes` ago), minus the overlap."""
        if mark is None:
            async with self.db.session() as session:
                mark = await jobs.newest_coupled_change(session, rule.name, side)
            mark = mark or utcnow() - timedelta(minutes=max(minutes, 1.0))
        return aware(mark) - timedelta(seconds=self.job_settings.catch_up_overlap_seconds)

    async def publish_changes(self, rule: Rule, side: str, since: datetime, label: str) -> tuple[int, datetime]:
        """Publish the records of `side` changed after `since` as change events; (events, newest change seen).
        A record version already synchronized, or published before (same modified time), is not published."""
        column, operator = ("lastModifiedDateTime", "gt") if side == "bc" else ("modifiedon", "ge")
        newest = since + timedelta(seconds=self.job_settings.catch_up_overlap_seconds)
        found = 0
        batch: list[ChangeEvent] = []
        async for record in await rule.records(side, f"{column} {operator} {odata_time(since)}"):
            record_id = rule.record_id(side, record)
            modified = rule.modified(side, record)
            if modified is not None and aware(modified) > newest:
                newest = aware(modified)
            if await self._synchronized(rule.name, side, record_id, modified, record.get("@odata.etag")):
                continue  # a newer version was synchronized already
            if not rule.included(side, record):
                # Its run would read it only to skip it by the mapping's filter (a BC company contact, changed with
                # its customer, under CONTACT's `type eq 'Person'`); a later change that brings it in is listed again.
                continue
            # New per run (`label` holds the run's number): an event of an earlier run that was dead-lettered
            # must not make this run's one a duplicate, or only a manual re-drive would heal the record. Within
            # a run, one event per record version.
            stamp = modified.isoformat() if modified else "-"
            batch.append(record_event(rule, side, record_id, occurred_at=modified,
                                      dedupe_key=f"catchup:{rule.name}:{side}:{record_id}:{stamp}:{label}",
                                      correlation_id=label))
            if len(batch) >= BATCH:
                found += await self._publish(batch)
                batch = []
        found += await self._publish(batch)
        return found, newest

    async def _synchronized(self, mapping: str, side: str, record_id: str, modified: datetime | None,
                            etag: object) -> bool:
        async with self.db.session() as session:
            coupling = await couplings.find(session, mapping, side, record_id)
        if coupling is None:
            return False
        if etag and etag == couplings.state_etag(coupling, side):
            return True  # the very version the last run read or wrote (an ETag changes with every write)
        if modified is None:
            return False
        seen = coupling.bc_modified if side == "bc" else coupling.dataverse_modified
        # Equal times are not proof: Dataverse keeps whole seconds, BC milliseconds, and two writes may share one.
        return seen is not None and aware(seen) > aware(modified)

    async def _publish(self, events: list[ChangeEvent]) -> int:
        if not events:
            return 0
        async with self.db.session() as session:
            new = await outbox.store_events(session, events)
        return sum(new)

    async def _full_reconcile(self, rule: Rule, sides: list[str], run: int) -> None:
        events = [ChangeEvent(
            source=Side(side).source, entity=entity_of(rule, side), change_type="collection",
            occurred_at=utcnow(), dedupe_key=f"catchup-full:{rule.name}:{side}:{run}:{uuid.uuid4().hex}",
            correlation_id=f"catchup-{rule.name}-{run}", full_reconcile=True,
            company_id=rule.ctx.bc.company_id if side == "bc" else None,
            api=rule.mapping.bc_api if side == "bc" else None) for side in sides]
        await self._publish(events)
