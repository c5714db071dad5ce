"""The sync engine: apply one change event — read the source, map, resolve dependencies, write the other
side, update the coupling — exactly once in effect, without echo loops.

Echoes and "nothing changed": each coupling keeps, per side, a hash of the values that side gives the
other (`bc_hash`, `dataverse_hash`). A side whose current hash equals the stored one has not changed since
the last synchronization, whoever wrote it last — our own writes coming back count as unchanged.
Conflicts: both sides' hashes differ from the stored ones → the mapping's conflict policy decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from consumers.coalesce import Coalescer
from consumers.errors import (
    Conflict,
    CoupledMeanwhile,
    MappingHeld,
    MappingUnavailable,
    MissingDependency,
    RecordBusy,
    Skip,
    SyncFailure,
)
from consumers.lease import Lease
from consumers.rules.base import OTHER, Rule
from schemas.events import ChangeEvent
from schemas.mappings import ConflictPolicy, DeletePolicy, TableMapping
from service.connectors.http import ApiError, PreconditionFailed, is_transient
from service.logging import get_logger
from service.metrics import EVENTS_FOLDED, SYNC_LAG, SYNC_RECORDS
from service.store import couplings, mapping_configs, reconciles, synclog
from service.store.db import Database
from service.store.models import Coupling
from service.store.outbox import aware

log = get_logger(__name__)

RERUNS = 3  # runs of one event when other runs keep coupling its match meanwhile
WRITE_ATTEMPTS = 4  # re-read and re-apply after a stale ETag, this many times
SIDE_OF_SOURCE = {"business_central": "bc", "dataverse": "dataverse"}
SOURCE_OF_SIDE = {"bc": "business_central", "dataverse": "dataverse"}

Redrive = Callable[[str, str], Awaitable[None]]  # (mapping, event JSON) → put it back on the mapping's queue
PROGRESS_EVERY = 100  # records of a reconciliation between progress reports


@dataclass
class ReconcileCounts:
    listed: int = 0  # records the listing showed
    checked: int = 0  # couplings it did not show, read again (full reconciliations)
    failed: int = 0


Progress = Callable[[ReconcileCounts], Awaitable[None]]


def digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def direction_of(target: str) -> str:
    return "to_crm" if target == "dataverse" else "from_crm"


@dataclass
class Applied:
    result: str  # inserted | modified | deleted | unchanged | skipped | coupled
    direction: str
    other_id: str | None = None
    source_modified: datetime | None = None
    new_coupling: Coupling | None = None


class SyncEngine:
    def __init__(self, db: Database, rules: dict[str, Rule], redrive: Redrive | None = None,
                 concurrency: int = 16) -> None:
        self.db = db
        self.rules = rules
        self.redrive = redrive
        self.slots = asyncio.Semaphore(concurrency)  # runs of live events and reconciliations at once
        self.coalescer = Coalescer(self.slots)  # events of a record already being applied here fold into one re-run
        self.reconcile_requested: Callable[[], Awaitable[None]] | None = None  # wakes the reconcile job runner

    # --- entry points -------------------------------------------------------------------------------------------

    async def handle(self, mapping: TableMapping, event: ChangeEvent) -> None:
        """The worker's handler: apply one event; failures are listed and re-raised for a retry."""
        rule = self.rules[mapping.name]
        side = SIDE_OF_SOURCE[event.source]
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

        async def run(deleted: bool) -> None:
            async with self.db.session() as session:  # in the run: only runs take database connections
                skipped = await synclog.is_skipped(session, rule.name, event.source, record_id.lower())
            if skipped:  # failed twice the same way: waits for an operator's retry (admin API)
                SYNC_RECORDS.labels(rule.name, direction_of(OTHER[side]), "skipped").inc()
                return
            try:
                await self.sync_record(rule, side, record_id, deleted=deleted)
            except (SyncFailure, ApiError) as exc:
                await self._record_error(rule, side, record_id, exc, event.model_dump_json())
                raise

        absorbed = await self.coalescer.run((rule.name, side, record_id.lower()), run, deleted)
        if absorbed:  # events with no run of their own: each run is counted by result, these here
            EVENTS_FOLDED.labels(rule.name).inc(absorbed)

    async def request_reconcile(self, rule: Rule, side: str, event: ChangeEvent) -> None:
        """A collection event asks for a reconciliation: stored as a job (consumers/jobs/reconcile.py) and the
        event acknowledged at once — a whole-entity run inside one delivery would outlive the broker's
        consumer timeout, and its redelivery would start the run again in parallel."""
        async with self.db.session() as session:
            new = await reconciles.request(session, event.dedupe_key, rule.name, side, event.collection_filter,
                                           bool(event.full_reconcile), event.correlation_id)
        log.info("reconciliation requested", mapping=rule.name, side=side, full=bool(event.full_reconcile),
                 new=new)
        if new and self.reconcile_requested is not None:
            await self.reconcile_requested()

    async def reconcile(self, rule: Rule, side: str, filter_: str | None, full: bool,
                        progress: Progress | None = None) -> ReconcileCounts:
        """Read the changed set (or everything, to find hidden deletes) and apply each record. Each record takes
        a slot of its own, so that a long reconciliation never keeps live events waiting for long. `progress`
        is called every PROGRESS_EVERY records (it renews the job's lease; it raises to stop the run)."""
        counts = ReconcileCounts()
        seen: set[str] = set()
        kind = "reconcile"
        listing_started = datetime.now(UTC)

        async def one(record_id: str, record: dict[str, Any] | None) -> None:
            try:
                async with self.slots:
                    await self.sync_record(rule, side, record_id, record=record, kind=kind)
            except RecordBusy:
                pass  # a live run is applying it right now, from the source as it is
            except (SyncFailure, ApiError) as exc:
                counts.failed += 1
                await self._record_error(rule, side, record_id, exc, None)

        async for record in await rule.records(side, filter_):
            record_id = rule.record_id(side, record)
            seen.add(record_id)
            counts.listed += 1
            await one(record_id, record)
            if progress is not None and counts.listed % PROGRESS_EVERY == 0:
                await progress(counts)
        if not full:
            return counts
        # Couplings whose record the listing did not show. Only on evidence: a coupling made while the listing
        # ran (a live event, after the listing passed its page) is no candidate, and each candidate is read
        # again — the delete policy runs only when the source says the record is gone (404).
        after = 0
        while batch := await self._couplings_page(rule.name, after):
            after = batch[-1].id or after
            for coupling in batch:
                record_id = coupling.bc_id if side == "bc" else coupling.dataverse_id
                if record_id in seen or aware(coupling.created_at) >= listing_started:
                    continue
                counts.checked += 1
                await one(record_id, None)
            if progress is not None:
                await progress(counts)
        return counts

    async def sync_dependency(self, mapping: str, side: str, record_id: str) -> str | None:
        """Synchronize a referenced record first (if its mapping's direction allows); its coupled id."""
        rule = self.rules[mapping]
        other = OTHER[side]
        if rule.unavailable:
            raise MappingUnavailable(f"{mapping} cannot run here ({rule.unavailable[:300]}), so its record "
                                     f"{record_id} cannot be synchronized first", mapping, side, record_id)
        if not rule.creates_toward(other):
            raise MissingDependency(
                f"{mapping} record {record_id} is not coupled, and {mapping} does not synchronize toward "
                f"{'Dynamics 365 Sales' if other == 'dataverse' else 'Business Central'}", mapping, side, record_id)
        record = await rule.read(side, record_id)
        if record is None:
            raise MissingDependency(f"{mapping} record {record_id} does not exist", mapping, side, record_id)
        if not rule.included(side, record):
            return None
        applied = await self.sync_record(rule, side, record_id, record=record)
        if applied.other_id is None:
            raise MissingDependency(f"{mapping} record {record_id} could not be coupled", mapping, side, record_id)
        return applied.other_id

    # --- one record ---------------------------------------------------------------------------------------------

    async def sync_record(self, rule: Rule, side: str, record_id: str, *, deleted: bool = False,
                          record: dict[str, Any] | None = None, kind: str = "live") -> Applied:
        record_id = record_id.lower()
        for _ in range(RERUNS):
            try:
                return await self._sync_once(rule, side, record_id, deleted, record, kind)
            except CoupledMeanwhile:
                continue  # run again, now with the coupling another run saved
        raise RecordBusy(f"{rule.name} {side} {record_id} keeps being coupled by other runs")

    async def _sync_once(self, rule: Rule, side: str, record_id: str, deleted: bool, record: dict[str, Any] | None,
                         kind: str) -> Applied:
        other = OTHER[side]
        lease, coupling = await self._lease(rule, side, record_id)
        applied: Applied | None = None
        try:
            applied = Applied("failed", direction_of(other))
            try:
                applied = await self._apply(rule, side, record_id, coupling, deleted, record, kind, lease)
            except Skip as exc:
                log.info("record skipped", mapping=rule.name, side=side, record_id=record_id, reason=str(exc))
                applied = Applied("skipped", direction_of(other), _id(coupling, other) if coupling else None)
            except (RecordBusy, CoupledMeanwhile) as exc:  # it comes back: nothing to count
                log.info("busy or coupled meanwhile", mapping=rule.name, record_id=record_id, detail=str(exc))
                applied = None
                raise
        finally:
            if applied is None:
                await lease.release()
            else:
                try:
                    async with self.db.session() as session:  # the lease ends with the count: one transaction
                        await lease.release(session)
                        await synclog.count(session, rule.name, applied.direction, kind, _bucket(kind),
                                            Counter({applied.result: 1}))
                        if applied.result != "failed":
                            await synclog.resolve_errors(session, rule.name, SOURCE_OF_SIDE[side], record_id)
                except Exception:
                    with contextlib.suppress(Exception):  # give the record back at least (else: in 20 s)
                        await lease.release()
                    raise
                SYNC_RECORDS.labels(rule.name, applied.direction, applied.result).inc()
        if applied.result in ("inserted", "modified", "coupled") and applied.source_modified is not None:
            SYNC_LAG.labels(rule.name).observe(max(0.0, (datetime.now(UTC) - applied.source_modified).total_seconds()))
        if applied.new_coupling is not None:
            await self._redrive_waiting(applied.new_coupling)
        return applied

    async def _lease(self, rule: Rule, side: str, record_id: str) -> tuple[Lease, Coupling | None]:
        """Lease the record and its coupled counterpart together (all or none, so that two runs of one pair
        never hold one key each), and the coupling as it is under that lease."""
        what = f"{rule.name} {side} {record_id}"

        async def current(session: AsyncSession) -> Coupling | None:
            # Under the lease, in its transaction: a hold acknowledged before the lease was taken is seen here,
            # and the hold's answer waits for the leases taken before it (service/api/admin_mappings.py).
            if await mapping_configs.is_held(session, rule.name):
                raise MappingHeld(rule.name)
            return await couplings.find(session, rule.name, side, record_id)

        def pair(coupling: Coupling | None) -> tuple[Any, ...] | None:
            return (coupling.id, coupling.bc_id, coupling.dataverse_id) if coupling is not None else None

        for _ in range(RERUNS):
            async with self.db.session() as session:
                coupling = await current(session)
            keys = [f"{rule.name}:{side}:{record_id}"]
            if coupling is not None:
                keys.append(f"{rule.name}:{OTHER[side]}:{_id(coupling, OTHER[side])}")
            lease = Lease(self.db)
            now = await lease.add(keys, what, then=current)  # coupled (or re-coupled) while we waited?
            if pair(now) == pair(coupling):
                return lease, now
            await lease.release()  # the keys were those of an older coupling: take the right ones
        raise RecordBusy(f"{what} keeps being coupled by other runs")

    async def _apply(self, rule: Rule, side: str, record_id: str, coupling: Coupling | None, deleted: bool,
                     record: dict[str, Any] | None, kind: str, lease: Lease) -> Applied:
        listed = record is not None  # the caller's copy (a listing's), not read under this lease
        if deleted and record is None:  # a delete notice is a claim: only the source can say the record is gone
            record = await rule.read(side, record_id)
            if record is not None:
                log.warning("a delete notice for a record that exists: applied as a change", mapping=rule.name,
                            side=side, record_id=record_id)
                deleted = False
        custom = await rule.apply(self, side, record_id, coupling, deleted, record)
        if custom is not None:  # documents: the rule applies the record itself
            return custom
        other = OTHER[side]
        direction = direction_of(other)
        if record is None and not deleted:
            record = await rule.read(side, record_id)
        if record is None:
            return await self._deleted(rule, side, record_id, coupling)
        if not rule.included(side, record):
            raise Skip("excluded by the mapping's filter")
        if not rule.fields_toward(other):
            raise Skip(f"{rule.name} does not synchronize toward {other}")
        payload = await rule.values(other, record)
        source_hash = digest(payload)
        if listed and coupling is not None and _hash(coupling, side) != source_hash:
            # A listing's copy (reconciliation, full synchronization) may be older than what a live run applied
            # after it was listed. Written as it is, it would set the other side back, and no conflict would show
            # (the coupling holds the newer hashes): what is written is the record as it is now, under the lease.
            record = await rule.read(side, record_id)
            if record is None:
                return await self._deleted(rule, side, record_id, coupling)
            if not rule.included(side, record):
                raise Skip("excluded by the mapping's filter")
            payload = await rule.values(other, record)
            source_hash = digest(payload)
        source_modified = rule.modified(side, record)
        result = "modified"
        if coupling is None and not deleted:
            async with self.db.session() as session:
                if kind == "full":  # a full synchronization takes survivors of remove-coupling up again
                    await couplings.forget_decoupled(session, rule.name, side, record_id)
                elif await couplings.is_decoupled(session, rule.name, side, record_id):
                    raise Skip("its coupled record was deleted (remove-coupling): it is left alone until it is "
                               "coupled again or a full synchronization runs")
        if coupling is None:
            if not rule.creates_toward(other) or rule.mapping.only_coupled:
                raise Skip("not coupled, and new records do not flow this way")
            candidates = await rule.match(other, record)
            # A record already coupled to another one is not a match (e.g. two customers of the same name);
            # one coupled to this very record is (the coupling was read before another worker saved it).
            async with self.db.session() as session:
                taken = [await couplings.find(session, rule.name, other, rule.record_id(other, c)) for c in candidates]
            candidates = [c for c, t in zip(candidates, taken, strict=True) if t is None or _id(t, side) == record_id]
            if len(candidates) > 1:
                raise SyncFailure(f"{len(candidates)} records on the other side match this one; couple it by hand")
            if not candidates:
                written = await rule.values(other, record, creating=True)
                created = await rule.create(other, written)
                # A rule's create may read the new record again after follow-up writes (a product made Active,
                # priced): by then a person may have changed it. The coupling must hold what *we* wrote, and a
                # difference must still reach the source — else that change would count as synchronized.
                moved = sorted(k for k, v in written.items() if k in created and not _holds(created, k, v))
                other_hash: str | None = digest(await rule.values(side, created))
                if moved:  # (or only spelled otherwise: the LCY code for a blank currency)
                    ours = digest(await rule.values(side, {**created, **written}))
                    moved, other_hash = (moved if ours != other_hash else []), ours
                coupling = await self._save(rule, side, record, other, created, source_hash, other_hash=other_hash)
                try:  # coupled first: whatever happens now, the new record is never created twice
                    given = await self._give_back(rule, side, record, other, created)
                except (SyncFailure, ApiError, Skip) as exc:
                    log.warning("values assigned by the other side not written back; applied again",
                                mapping=rule.name, side=side, record_id=record_id, error=str(exc)[:300])
                    moved = moved or ["(assigned values)"]  # the other side is news again
                    coupling = await self._save(rule, side, record, other, created, source_hash, other_hash=None)
                else:
                    if given is not record:  # the source's new modified time, for the catch-up
                        coupling = await self._save(rule, side, given, other, created, source_hash,
                                                    other_hash=other_hash)
                if moved:
                    await self._follow_up(rule, other, _id(coupling, other), moved)
                return Applied("inserted", direction, _id(coupling, other), source_modified, coupling)
            target: dict[str, Any] | None = candidates[0]
            assert target is not None
            # The match may be the very record whose run is creating this one (a notification of our own
            # create, ahead of its coupling): hold it too, and if a coupling appeared meanwhile, run again with it.
            target_id = rule.record_id(other, target)

            async def coupled(session: AsyncSession) -> Coupling | None:
                return await couplings.find(session, rule.name, other, target_id)

            if await lease.add([f"{rule.name}:{other}:{target_id}"], f"{rule.name} {other} {target_id}",
                               wait=False, then=coupled) is not None:
                raise CoupledMeanwhile(f"{rule.name} {other} {target_id} was coupled by another run")
            coupling = await self._save(rule, side, record, other, target, None, other_hash=None)
            result = "coupled"
            new_coupling: Coupling | None = coupling
        else:
            new_coupling = None
            target = await rule.read(other, _id(coupling, other))
            if target is None:  # deleted without our seeing it: as if its delete arrived now
                async with self.db.session() as session:
                    await couplings.remove(session, coupling.id or 0)
                    await couplings.mark_decoupled(session, rule.name, side, record_id)
                raise Skip("the coupled record no longer exists; the coupling was removed")
            if _hash(coupling, side) == source_hash:
                return Applied("unchanged", direction, _id(coupling, other))
        # Both sides changed since the last synchronization? Then the policy decides who wins.
        back = await rule.values(side, target)
        stored_other = _hash(coupling, other)
        if result != "coupled" and stored_other is not None and digest(back) != stored_other and back:
            winner = self._winner(rule.mapping, side, record, other, target, rule)
            if winner is None:
                raise Conflict(f"both sides changed: {side} {json.dumps(payload, default=str)[:400]} / "
                               f"{other} {json.dumps(back, default=str)[:400]}")
            if winner == other:
                record = await self._write(rule, side, record, back)
                payload = await rule.values(other, record)
                source_hash = digest(payload)
        updated = await self._write(rule, other, target, payload)
        coupling = await self._save(rule, side, record, other, updated, source_hash)
        return Applied(result, direction, _id(coupling, other), source_modified, new_coupling)

    async def _deleted(self, rule: Rule, side: str, record_id: str, coupling: Coupling | None) -> Applied:
        other = OTHER[side]
        direction = direction_of(other)
        if coupling is None:
            return Applied("skipped", direction)
        policy = rule.mapping.delete_policy
        target = await rule.read(other, _id(coupling, other)) if policy != DeletePolicy.REMOVE_COUPLING else None
        async with self.db.session() as session:
            await couplings.remove(session, coupling.id or 0)
            if policy == DeletePolicy.REMOVE_COUPLING:
                await couplings.mark_decoupled(session, rule.name, other, _id(coupling, other))
        if policy == DeletePolicy.PROPAGATE and target is not None:
            await rule.delete(other, target)
            return Applied("deleted", direction)
        if policy == DeletePolicy.RESTORE and target is not None:
            recreated = await rule.create(side, await rule.values(side, target, creating=True))
            new = await self._save(rule, other, target, side, recreated, digest(await rule.values(side, target)))
            return Applied("inserted", direction_of(side), _id(new, side), None, new)
        log.info("coupling removed after a delete", mapping=rule.name, side=side, record_id=record_id)
        return Applied("deleted" if policy == DeletePolicy.PROPAGATE else "skipped", direction)

    # --- helpers ------------------------------------------------------------------------------------------------

    def _winner(self, mapping: TableMapping, side: str, record: dict[str, Any], other: str, target: dict[str, Any],
                rule: Rule) -> str | None:
        policy = mapping.conflict_policy
        if policy == ConflictPolicy.SEND:
            return "bc"
        if policy == ConflictPolicy.GET:
            return "dataverse"
        if policy == ConflictPolicy.NONE:
            return None
        mine, theirs = rule.modified(side, record), rule.modified(other, target)
        return other if mine and theirs and theirs > mine else side

    async def _write(self, rule: Rule, toward: str, target: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """PATCH with the record's ETag; a stale ETag means re-read and re-apply, not failure."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return await rule.update(toward, target, payload)
            except PreconditionFailed:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                fresh = await rule.read(toward, rule.record_id(toward, target))
                if fresh is None:
                    raise Skip("the record was deleted while we wrote it") from None
                target = fresh
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _give_back(self, rule: Rule, side: str, record: dict[str, Any], other: str,
                         created: dict[str, Any]) -> dict[str, Any]:
        """What the other system assigned to the record we just created there goes back to the source now
        (BC numbers a customer made from a Sales account: `number` → `accountnumber`): the fields that flow
        from `other` toward `side` only. Their echo would be found unchanged, so nothing else would write them.
        The source record as it is afterwards."""
        toward_other = set(rule.fields_toward(other))
        wanted: dict[str, Any] = {}
        for field in rule.fields_toward(side):
            if field not in toward_other:
                wanted.update(await rule.field_value(field, side, created))
        changes = {key: value for key, value in wanted.items() if not _holds(record, key, value)}
        if not changes:
            return record
        log.info("values assigned by the other side written back", mapping=rule.name, side=side,
                 fields=sorted(changes))
        return await self._write(rule, side, record, changes)

    async def _save(self, rule: Rule, side: str, record: dict[str, Any], other: str, target: dict[str, Any],
                    source_hash: str | None, *, other_hash: str | bool | None = True) -> Coupling:
        """Store the coupling with both sides' hashes and modified times after a write (or a match)."""
        if other_hash is True:
            other_hash = digest(await rule.values(side, target))
        ids = {side: rule.record_id(side, record), other: rule.record_id(other, target)}
        hashes = {side: source_hash, other: other_hash}
        times = {side: rule.modified(side, record), other: rule.modified(other, target)}
        async with self.db.session() as session:
            return await couplings.save(
                session, rule.name, ids["bc"], ids["dataverse"], bc_hash=hashes["bc"],
                dataverse_hash=hashes["dataverse"], bc_modified=times["bc"], dataverse_modified=times["dataverse"],
                last_result="ok", attempts=0,
            )

    async def _follow_up(self, rule: Rule, side: str, record_id: str, fields: list[str]) -> None:
        """Apply `side`'s record again after this run (an event of it on the mapping's queue)."""
        log.info("record changed while it was created; applied again", mapping=rule.name, side=side,
                 record_id=record_id, fields=fields)
        if self.redrive is None:
            return
        now = datetime.now(UTC)
        event = ChangeEvent(source=SOURCE_OF_SIDE[side], entity=rule.mapping.bc_entity if side == "bc"
                            else rule.mapping.dataverse_entity, record_id=record_id, change_type="updated",
                            occurred_at=now, dedupe_key=f"follow-up:{rule.name}:{side}:{record_id}:{now.isoformat()}",
                            correlation_id=f"follow-up-{rule.name}", api=rule.mapping.bc_api if side == "bc" else None,
                            company_id=rule.ctx.bc.company_id if side == "bc" else None)
        await self.redrive(rule.name, event.model_dump_json())

    async def _record_error(self, rule: Rule, side: str, record_id: str, error: Exception, event: str | None) -> None:
        message = str(error) if not isinstance(error, ApiError) else f"{error.status} {error.code}: {error.message}"
        waiting_for = getattr(error, "waiting_for", None)
        async with self.db.session() as session:
            await synclog.record_error(session, rule.name, SOURCE_OF_SIDE[side], record_id, message, event=event,
                                       waiting_for=waiting_for, transient=is_transient(error))
        log.warning("record failed", mapping=rule.name, side=side, record_id=record_id, error=message[:300])

    async def _redrive_waiting(self, coupling: Coupling) -> None:
        """Records that waited for this coupling get their events back on the queue."""
        if self.redrive is None:
            return
        keys = [f"{coupling.mapping}:bc:{coupling.bc_id}", f"{coupling.mapping}:dataverse:{coupling.dataverse_id}"]
        async with self.db.session() as session:
            waiting = await synclog.waiting_on(session, keys)
        for error in waiting:
            if error.event:
                log.info("re-driving a record that waited", mapping=error.mapping, record_id=error.source_id)
                await self.redrive(error.mapping, error.event)

    async def _couplings_page(self, mapping: str, after: int) -> list[Coupling]:
        async with self.db.session() as session:
            return await couplings.list_for(session, mapping, limit=500, after_id=after)


def _holds(record: dict[str, Any], key: str, value: Any) -> bool:
    """Whether the record already has this value (a lookup `<column>@odata.bind` as its `_<column>_value`)."""
    if key.endswith("@odata.bind"):
        current = record.get(f"_{key.removesuffix('@odata.bind')}_value")
        return str(current or "").lower() == str(value or "").rpartition("(")[2].rstrip(")").lower()
    current = record.get(key)
    return current == value or (current in (None, "") and value in (None, ""))


def _id(coupling: Coupling, side: str) -> str:
    return coupling.bc_id if side == "bc" else coupling.dataverse_id


def _hash(coupling: Coupling, side: str) -> str | None:
    return coupling.bc_hash if side == "bc" else coupling.dataverse_hash


def _bucket(kind: str) -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:00Z") if kind == "live" else datetime.now(UTC).strftime("%Y-%m-%d")
