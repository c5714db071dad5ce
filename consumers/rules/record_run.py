"""One run of one record, as the engine hands it to a rule: everything the rule decides from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.lease import Lease
from schemas.events import ChangeEvent
from schemas.vocabulary import Side
from service.store.models import Coupling


@dataclass
class RecordRun:
    side: Side  # the side whose record changed (the source of this run)
    record_id: str  # lower case
    coupling: Coupling | None  # as it is under the run's lease
    deleted: bool  # the source says it is gone (a delete notice the engine verified, or a 404)
    record: dict[str, Any] | None  # the source record when the caller has it already (else the rule reads it)
    listed: bool  # `record` is a listing's copy (reconciliation, full synchronization): maybe older than now
    kind: str  # live | reconcile | full
    lease: Lease  # the run's record lease: a rule may add the key of a record it is about to couple
    # What the rule found, for the record history's label and search terms: the source record as it applied it
    # (it may replace `record` with what it read) and the other side's record.
    target: dict[str, Any] | None = None
    # The change events this run serves (none for reconciliations and full synchronizations): what the sources
    # reported, e.g. a BC notification's lastModifiedDateTime, which may show the run has nothing to do.
    events: Sequence[ChangeEvent] = ()
