"""The field-by-field flow most mappings need: read the source, map, match or create, resolve a conflict,
write the other side, keep the coupling — and say what was decided and which fields changed.

Echoes and "nothing changed": each coupling keeps, per side, a hash of the values that side gives the
other (`bc_hash`, `dataverse_hash`). A side whose current hash equals the stored one has not changed since
the last synchronization, whoever wrote it last — our own writes coming back count as unchanged. Such a run
is an echo when the coupling says this integration wrote that side last and the record's modified time is
not later than the one our write left (`written`, `bc_modified` / `dataverse_modified`).
Conflicts: both sides' hashes differ from the stored ones → the mapping's conflict policy decides.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from consumers.errors import Conflict, CoupledMeanwhile, Filtered, Skip, SyncFailure
from consumers.rules.base import TERM_COLUMNS
from consumers.rules.field_values import FieldValues
from consumers.rules.record_run import RecordRun
from schemas.mappings import ConflictPolicy, DeletePolicy
from schemas.vocabulary import Applied, Decision, FieldChange, Result, Side, digest
from service.connectors.http import ApiError, NotFound, PreconditionFailed
from service.logging import get_logger
from service.store import couplings
from service.store.models import Coupling
from service.store.outbox import aware

log = get_logger(__name__)

WRITE_ATTEMPTS = 4  # re-read and re-apply after a stale ETag, this many times
# Dataverse lookups that lookup transforms write besides their field's own column (unit of measure: group and unit).
LOOKUP_COLUMNS = ("_defaultuomid_value", "_defaultuomscheduleid_value", "_transactioncurrencyid_value",
                  "_ownerid_value", "_parentcustomerid_value", "_pricelevelid_value", "firstname", "lastname")


class FieldRule(FieldValues):
    async def apply(self, run: RecordRun) -> Applied:
        side, other = run.side, run.side.other
        seen = self._seen_already(run)
        if seen is not None:
            return seen
        record = run.record
        if record is None and not run.deleted:
            record = await self.read(side, run.record_id)
        if record is None:
            return await self._deleted(run)
        run.record = record
        self._check(side, record)
        payload = await self.values(other, record)
        source_hash = digest(payload)
        coupling = run.coupling
        if run.listed and coupling is not None and _hash(coupling, side) != source_hash:
            # A listing's copy (reconciliation, full synchronization) may be older than what a live run applied
            # after it was listed. Written as it is, it would set the other side back, and no conflict would show
            # (the coupling holds the newer hashes): what is written is the record as it is now, under the lease.
            record = await self.read(side, run.record_id)
            if record is None:
                return await self._deleted(run)
            run.record = record
            self._check(side, record)
            payload = await self.values(other, record)
            source_hash = digest(payload)
        if coupling is None:
            return await self._first(run, record, payload, source_hash)
        if _hash(coupling, side) == source_hash:  # nothing to write: the other side need not be read
            return self._unchanged(side, coupling, record)
        state = self._known_state(coupling, other, payload)
        if state is not None:
            try:
                return await self._write_known(run, record, state, payload, source_hash, coupling)
            except (PreconditionFailed, NotFound):
                pass  # changed or deleted since we last saw it: read it, then the usual way (conflict policy)
        target = run.target = await self.read(other, _id(coupling, other))
        if target is None:  # deleted without our seeing it: as if its delete arrived now
            async with self.ctx.db.session() as session:
                await couplings.remove(session, coupling.id or 0)
                await couplings.mark_decoupled(session, self.name, side, run.record_id)
            raise Skip("the coupled record no longer exists; the coupling was removed")
        return await self._write_pair(side, record, target, payload, source_hash, coupling, Result.MODIFIED)

    def _seen_already(self, run: RecordRun) -> Applied | None:
        """A BC notification needs no read when the time it reports is earlier than the record's modified time
        the coupling holds: the last run read or wrote that state (a write goes out with the ETag of what it had
        seen, so no earlier change can hide behind it). BC stamps a notification in the database trigger, before
        the record's SystemModifiedAt, and a merged one with its last change's time (codeunits 6153/6154,
        docs/echoes.md): our own write's echo comes earlier and costs no request; anyone's later change does not.
        An equal time proves nothing (two writes may share a tick) and is read. Only notifications (and catch-up
        events) of this very record that report a change, not a delete."""
        coupling, side = run.coupling, run.side
        if (coupling is None or side is not Side.BC or run.record is not None or run.deleted or not run.events
                or coupling.bc_modified is None):
            return None
        left = aware(coupling.bc_modified)
        for event in run.events:
            if (event.source != "business_central" or event.change_type not in ("created", "updated")
                    or event.entity != self.mapping.bc_entity or (event.record_id or "").lower() != run.record_id
                    or event.occurred_at >= left):
                return None
        if coupling.written in (side, "both"):
            return Applied(Result.UNCHANGED, side.other.toward, _id(coupling, side.other), decision=Decision.ECHO,
                           reason=f"the notification reports the record as this integration wrote it to "
                                  f"{side.system}: our own write's echo (not read)")
        return Applied(Result.UNCHANGED, side.other.toward, _id(coupling, side.other),
                       reason="the notification reports a change already synchronized (not read)")

    def _known_state(self, coupling: Coupling, side: Side, payload: dict[str, Any]) -> dict[str, Any] | None:
        """What `side`'s record held after the last run, when it holds every field the payload writes."""
        text = coupling.bc_state if side is Side.BC else coupling.dataverse_state
        state = json.loads(text) if text else None
        if not isinstance(state, dict) or not state.get("@odata.etag"):
            return None
        return state if all(_column(key) in state for key in payload) else None

    async def _write_known(self, run: RecordRun, record: dict[str, Any], state: dict[str, Any],
                           payload: dict[str, Any], source_hash: str, coupling: Coupling) -> Applied:
        """Write what differs from the record as the last run left it, with that state's ETag: a 412 (or 404)
        means someone changed it since, and the caller reads it and goes the usual way."""
        side, other = run.side, run.side.other
        changed = {key: value for key, value in payload.items() if not _holds(state, key, value)}
        if changed:
            updated = run.target = await self._write_once(other, state, changed)
            coupling = await self._save(side, record, updated, source_hash, written=str(other))
        else:  # the other side holds these values already: only the coupling learns the new source hash
            run.target = state
            coupling = await self._save(side, record, state, source_hash, other_hash=_hash(coupling, other),
                                        written=coupling.written, other_modified=_modified(coupling, other))
        return Applied(Result.MODIFIED, other.toward, _id(coupling, other), self.modified(side, record), None, None,
                       f"changed in {side.system}", _changes(other, state, changed, run.target))

    async def _write_once(self, toward: Side, target: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        return await self.update(toward, target, payload)

    def _check(self, side: Side, record: dict[str, Any]) -> None:
        if not self.included(side, record):
            raise Filtered("excluded by the mapping's filter")
        if not self.fields_toward(side.other):
            raise Skip(f"{self.name} does not synchronize toward {side.other.system}")

    def _unchanged(self, side: Side, coupling: Coupling, record: dict[str, Any]) -> Applied:
        modified = self.modified(side, record)
        stored = coupling.bc_modified if side is Side.BC else coupling.dataverse_modified
        left = aware(stored) if stored is not None else None
        if coupling.written in (side, "both") and modified is not None and left is not None and modified <= left:
            return Applied(Result.UNCHANGED, side.other.toward, _id(coupling, side.other), decision=Decision.ECHO,
                           reason=f"the record is as this integration wrote it to {side.system}: our own write's echo")
        return Applied(Result.UNCHANGED, side.other.toward, _id(coupling, side.other),
                       reason="no field this mapping carries changed since the last synchronization")

    async def _first(self, run: RecordRun, record: dict[str, Any], payload: dict[str, Any],
                     source_hash: str) -> Applied:
        """Not coupled yet: couple to its match on the other side, or create it there."""
        side, other = run.side, run.side.other
        async with self.ctx.db.session() as session:
            if run.kind == "full":  # a full synchronization takes survivors of remove-coupling up again
                await couplings.forget_decoupled(session, self.name, side, run.record_id)
            elif await couplings.is_decoupled(session, self.name, side, run.record_id):
                raise Skip("its coupled record was deleted (remove-coupling): it is left alone until it is "
                           "coupled again or a full synchronization runs")
        if not self.creates_toward(other) or self.mapping.only_coupled:
            raise Skip("not coupled, and new records do not flow this way")
        candidates = await self.match(other, record)
        # A record already coupled to another one is not a match (e.g. two customers of the same name);
        # one coupled to this very record is (the coupling was read before another worker saved it).
        async with self.ctx.db.session() as session:
            taken = [await couplings.find(session, self.name, other, self.record_id(other, c)) for c in candidates]
        candidates = [c for c, t in zip(candidates, taken, strict=True) if t is None or _id(t, side) == run.record_id]
        if len(candidates) > 1:
            raise SyncFailure(f"{len(candidates)} records on the other side match this one; couple it by hand")
        if not candidates:
            return await self._create(run, record, source_hash)
        target = run.target = candidates[0]
        # The match may be the very record whose run is creating this one (a notification of our own
        # create, ahead of its coupling): hold it too, and if a coupling appeared meanwhile, run again with it.
        target_id = self.record_id(other, target)

        async def coupled(session: AsyncSession) -> Coupling | None:
            return await couplings.find(session, self.name, other, target_id)

        if await run.lease.add([f"{self.name}:{other}:{target_id}"], f"{self.name} {other} {target_id}",
                               wait=False, then=coupled) is not None:
            raise CoupledMeanwhile(f"{self.name} {other} {target_id} was coupled by another run")
        coupling = await self._save(side, record, target, None, other_hash=None)
        return await self._write_pair(side, record, target, payload, source_hash, coupling, Result.COUPLED)

    async def _create(self, run: RecordRun, record: dict[str, Any], source_hash: str) -> Applied:
        side, other = run.side, run.side.other
        written = await self.values(other, record, creating=True)
        created = run.target = await self.create(other, written)
        # A rule's create may read the new record again after follow-up writes (a product made Active,
        # priced): by then a person may have changed it. The coupling must hold what *we* wrote, and a
        # difference must still reach the source — else that change would count as synchronized.
        moved = sorted(k for k, v in written.items() if k in created and not _holds(created, k, v))
        other_hash: str | None = digest(await self.values(side, created))
        if moved:  # (or only spelled otherwise: the LCY code for a blank currency)
            ours = digest(await self.values(side, {**created, **written}))
            moved, other_hash = (moved if ours != other_hash else []), ours
        coupling = await self._save(side, record, created, source_hash, other_hash=other_hash, written=other)
        changes = _changes(other, {}, written, created)
        try:  # coupled first: whatever happens now, the new record is never created twice
            given, back = await self._give_back(side, record, created)
        except (SyncFailure, ApiError, Skip) as exc:
            log.warning("values assigned by the other side not written back; applied again", mapping=self.name,
                        side=side, record_id=self.record_id(side, record), error=str(exc)[:300])
            moved = moved or ["(assigned values)"]  # the other side is news again
            coupling = await self._save(side, record, created, source_hash, other_hash=None, written=other)
        else:
            changes += back
            if given is not record:  # the source's new modified time, for the catch-up
                coupling = await self._save(side, given, created, source_hash, other_hash=other_hash, written="both")
        return Applied(Result.INSERTED, other.toward, _id(coupling, other), self.modified(side, record), coupling,
                       reason=f"new in {side.system}: created in {other.system}", changes=changes, follow_up=moved)

    async def _write_pair(self, side: Side, record: dict[str, Any], target: dict[str, Any], payload: dict[str, Any],
                          source_hash: str, coupling: Coupling, result: Result) -> Applied:
        """Write the change to the other side — after the conflict policy, when both sides changed."""
        other = side.other
        source_modified = self.modified(side, record)
        decision, reason, changes, written = None, None, [], str(other)
        back = await self.values(side, target)
        stored_other = _hash(coupling, other)
        if result is not Result.COUPLED and stored_other is not None and digest(back) != stored_other and back:
            winner = self._winner(side, record, target)
            if winner is None:
                raise Conflict(f"both sides changed: {side} {_short(payload)} / {other} {_short(back)}")
            policy = self.mapping.conflict_policy.value
            if winner == other:
                written_back = await self._write(side, record, back)
                changes, record = _changes(side, record, back, written_back), written_back
                payload = await self.values(other, record)
                source_hash = digest(payload)
                decision, written = Decision.CONFLICT_LOST, "both"
                reason = f"both sides changed; {other.system}'s values won (conflict policy {policy})"
            else:
                decision = Decision.CONFLICT_WON
                reason = f"both sides changed; {side.system}'s values won (conflict policy {policy})"
        updated = await self._write(other, target, payload)
        changes += _changes(other, target, payload, updated)
        coupling = await self._save(side, record, updated, source_hash, written=written)
        if reason is None:
            reason = (f"matched by its keys and coupled; changed in {side.system}" if result is Result.COUPLED
                      else f"changed in {side.system}")
        return Applied(result, other.toward, _id(coupling, other), source_modified,
                       coupling if result is Result.COUPLED else None, decision, reason, changes)

    async def _deleted(self, run: RecordRun) -> Applied:
        side, other, coupling = run.side, run.side.other, run.coupling
        if coupling is None:
            return Applied(Result.SKIPPED, other.toward, reason=f"deleted in {side.system}; it was not coupled")
        policy = self.mapping.delete_policy
        target = await self.read(other, _id(coupling, other)) if policy != DeletePolicy.REMOVE_COUPLING else None
        async with self.ctx.db.session() as session:
            await couplings.remove(session, coupling.id or 0)
            if policy == DeletePolicy.REMOVE_COUPLING:
                await couplings.mark_decoupled(session, self.name, other, _id(coupling, other))
        if policy == DeletePolicy.PROPAGATE and target is not None:
            await self.delete(other, target)
            return Applied(Result.DELETED, other.toward, reason=f"deleted in {side.system}: deleted in {other.system} "
                           "too (delete policy propagate)")
        if policy == DeletePolicy.RESTORE and target is not None:
            recreated = await self.create(side, await self.values(side, target, creating=True))
            new = await self._save(other, target, recreated, digest(await self.values(side, target)), written=side)
            return Applied(Result.INSERTED, side.toward, _id(new, side), None, new,
                           reason=f"deleted in {side.system}: created again from {other.system} "
                           "(delete policy restore)")
        log.info("coupling removed after a delete", mapping=self.name, side=side, record_id=run.record_id)
        return Applied(Result.DELETED if policy == DeletePolicy.PROPAGATE else Result.SKIPPED, other.toward,
                       decision=Decision.DELETED, reason=f"deleted in {side.system}: the coupling was removed "
                       f"(delete policy {policy.value})")

    # --- helpers ------------------------------------------------------------------------------------------------

    def _winner(self, side: Side, record: dict[str, Any], target: dict[str, Any]) -> Side | None:
        policy = self.mapping.conflict_policy
        if policy == ConflictPolicy.SEND:
            return Side.BC
        if policy == ConflictPolicy.GET:
            return Side.DATAVERSE
        if policy == ConflictPolicy.NONE:
            return None
        mine, theirs = self.modified(side, record), self.modified(side.other, target)
        return side.other if mine and theirs and theirs > mine else side

    async def _write(self, toward: Side, target: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """PATCH with the record's ETag; a stale ETag means re-read and re-apply, not failure."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return await self.update(toward, target, payload)
            except PreconditionFailed:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                fresh = await self.read(toward, self.record_id(toward, target))
                if fresh is None:
                    raise Skip("the record was deleted while we wrote it") from None
                target = fresh
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _give_back(self, side: Side, record: dict[str, Any],
                         created: dict[str, Any]) -> tuple[dict[str, Any], list[FieldChange]]:
        """What the other system assigned to the record we just created there goes back to the source now
        (BC numbers a customer made from a Sales account: `number` → `accountnumber`): the fields that flow
        from the other side toward `side` only. Their echo would be found unchanged, so nothing else would write
        them. The source record as it is afterwards, and what changed in it."""
        toward_other = set(self.fields_toward(side.other))
        wanted: dict[str, Any] = {}
        for field in self.fields_toward(side):
            if field not in toward_other:
                wanted.update(await self.field_value(field, side, created))
        changes = {key: value for key, value in wanted.items() if not _holds(record, key, value)}
        if not changes:
            return record, []
        log.info("values assigned by the other side written back", mapping=self.name, side=side,
                 fields=sorted(changes))
        after = await self._write(side, record, changes)
        return after, _changes(side, record, changes, after)

    async def _save(self, side: Side, record: dict[str, Any], target: dict[str, Any], source_hash: str | None, *,
                    other_hash: str | bool | None = True, written: str | None = None,
                    other_modified: datetime | None = None) -> Coupling:
        """Store the coupling with both sides' hashes, modified times and states after a write (or a match);
        `written`: the side(s) this run wrote ("bc", "dataverse", "both"), for telling echoes."""
        other = side.other
        if other_hash is True:
            other_hash = digest(await self.values(side, target))
        ids = {side: self.record_id(side, record), other: self.record_id(other, target)}
        hashes = {side: source_hash, other: other_hash}
        times = {side: self.modified(side, record), other: other_modified or self.modified(other, target)}
        states = {side: self._state(side, record), other: self._state(other, target)}
        code = (record if side is Side.BC else target).get("code")
        async with self.ctx.db.session() as session:
            return await couplings.save(
                session, self.name, ids[Side.BC], ids[Side.DATAVERSE], bc_hash=hashes[Side.BC],
                dataverse_hash=hashes[Side.DATAVERSE], bc_modified=times[Side.BC],
                dataverse_modified=times[Side.DATAVERSE], last_result="ok", attempts=0, written=written,
                bc_state=states[Side.BC], dataverse_state=states[Side.DATAVERSE],
                bc_key=code.upper()[:100] if isinstance(code, str) and code else None,
            )

    def _state(self, side: Side, record: dict[str, Any]) -> str | None:
        """The record's columns this mapping reads or writes, with its ETag (JSON), for the coupling; None when
        the record has no ETag (nothing to write against)."""
        columns = self._state_columns(side)
        kept = {key: value for key, value in record.items() if key in columns}
        return json.dumps(kept, default=str) if kept.get("@odata.etag") else None

    def _state_columns(self, side: Side) -> frozenset[str]:
        known: dict[Side, frozenset[str]] = self.__dict__.setdefault("_state_columns_of", {})
        if side not in known:
            keys = {column for pair in self.mapping.match_keys for column in pair}
            columns = {"@odata.etag", *TERM_COLUMNS, *keys}
            if side is Side.BC:
                columns |= {"id", "lastModifiedDateTime", *(f.bc for f in self.mapping.fields)}
            else:
                columns |= {self.dataverse_key, "modifiedon", *LOOKUP_COLUMNS}
                for f in self.mapping.fields:
                    columns |= {f.dataverse, f"_{f.dataverse}_value"}
            known[side] = frozenset(columns)
        return known[side]


def _column(key: str) -> str:
    """The record's column a payload key writes (a lookup `<column>@odata.bind` reads back as `_<column>_value`)."""
    return f"_{key.removesuffix('@odata.bind')}_value" if key.endswith("@odata.bind") else key


def _modified(coupling: Coupling, side: str) -> datetime | None:
    return coupling.bc_modified if side == Side.BC else coupling.dataverse_modified


def _holds(record: dict[str, Any], key: str, value: Any) -> bool:
    """Whether the record already has this value (a lookup `<column>@odata.bind` as its `_<column>_value`)."""
    if key.endswith("@odata.bind"):
        current = record.get(f"_{key.removesuffix('@odata.bind')}_value")
        return str(current or "").lower() == str(value or "").rpartition("(")[2].rstrip(")").lower()
    current = record.get(key)
    return current == value or (current in (None, "") and value in (None, ""))


def _changes(side: Side, before: dict[str, Any], payload: dict[str, Any],
             after: dict[str, Any] | None = None) -> list[FieldChange]:
    """The fields a write of `payload` changed on a record that was `before` (a lookup by its column name). With
    the write's answer `after`, a value the other system keeps as it was (a blank currency code that means the
    local one) is no change; the new value is the one the record now has."""
    out = []
    for key, value in payload.items():
        if _holds(before, key, value):
            continue
        column = key.removesuffix("@odata.bind")
        stored = f"_{column}_value" if key.endswith("@odata.bind") else key
        new = after[stored] if after is not None and stored in after else value
        if after is not None and stored in after and new == before.get(stored):
            continue
        out.append(FieldChange(side, column, before.get(stored), new))
    return out


def _short(values: dict[str, Any]) -> str:
    return json.dumps(values, default=str)[:400]


def _id(coupling: Coupling, side: str) -> str:
    return coupling.bc_id if side == Side.BC else coupling.dataverse_id


def _hash(coupling: Coupling, side: str) -> str | None:
    return coupling.bc_hash if side == Side.BC else coupling.dataverse_hash
