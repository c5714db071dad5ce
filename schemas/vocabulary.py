"""The words the sync engine, its rules, the store and the admin API share: sides, results, decisions, what one
run of one record did (`Applied`), and the hash that tells a changed record from an unchanged one.

It lives in `schemas/` because both halves use it: the worker (consumers/) decides, the store and the api
(service/) count and show. It imports nothing of either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class CoupledPair(Protocol):
    """What the vocabulary needs of a coupling (the store's `Coupling` is one): the pair of ids of a mapping."""

    mapping: str
    bc_id: str
    dataverse_id: str


class Side(StrEnum):
    """One of the two systems. Values are the names the store and the admin API use."""

    BC = "bc"
    DATAVERSE = "dataverse"

    @property
    def other(self) -> Side:
        return Side.DATAVERSE if self is Side.BC else Side.BC

    @property
    def source(self) -> str:
        """The `ChangeEvent.source` (and error-list `source`) of this side's events."""
        return "business_central" if self is Side.BC else "dataverse"

    @classmethod
    def of_source(cls, source: str) -> Side:
        return cls.BC if source == "business_central" else cls.DATAVERSE

    @property
    def toward(self) -> str:
        """The direction of a write *to* this side, as counters and metrics name it."""
        return "from_crm" if self is Side.BC else "to_crm"

    @property
    def system(self) -> str:
        return "Business Central" if self is Side.BC else "Dynamics 365 Sales"


SIDES: tuple[Side, Side] = (Side.BC, Side.DATAVERSE)


class Result(StrEnum):
    """How one run of one record is counted (the `result` label of bcsync_sync_records_total, the job log's
    columns, a full synchronization line's counters)."""

    INSERTED = "inserted"
    MODIFIED = "modified"
    DELETED = "deleted"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"
    COUPLED = "coupled"


RESULTS: tuple[str, ...] = tuple(r.value for r in Result)  # the counters' column names, in this order


class Decision(StrEnum):
    """What the integration decided for one run, finer than `Result`: the record history's word for it."""

    CREATED = "created"  # a new record on the other side
    COUPLED = "coupled"  # matched to an existing record and written
    APPLIED = "applied"  # the change was written to the other side
    CONFLICT_WON = "conflict-won"  # both sides changed; this side's values won and were written
    CONFLICT_LOST = "conflict-lost"  # both sides changed; the other side's values won and were written back here
    ECHO = "echo"  # the record is as this integration left it: our own write coming back
    UNCHANGED = "unchanged"  # it changed, but nothing this mapping carries
    DELETED = "deleted"  # the delete was propagated, or the coupling removed
    FILTERED = "filtered"  # excluded by the mapping's filter
    SKIPPED = "skipped"  # not applied, for the reason given
    WAITING = "waiting"  # a record it references must be synchronized first
    FAILED = "failed"


@dataclass(frozen=True)
class FieldChange:
    """One field written by a run: on which side, from what to what (None: not known, or not shown)."""

    side: Side
    field: str
    old: Any
    new: Any


@dataclass
class Applied:
    """What one run of one record did."""

    result: Result
    direction: str  # Side.toward of the side written (or that would have been)
    other_id: str | None = None
    source_modified: datetime | None = None
    new_coupling: CoupledPair | None = None  # a coupling this run made: records waiting for it go again
    decision: Decision | None = None  # None: the plain reading of `result`
    reason: str | None = None
    changes: list[FieldChange] = field(default_factory=list)
    follow_up: list[str] = field(default_factory=list)  # fields changed on the other side while we created it

    def decided(self) -> Decision:
        return self.decision or _PLAIN[self.result]


_PLAIN = {Result.INSERTED: Decision.CREATED, Result.MODIFIED: Decision.APPLIED, Result.DELETED: Decision.DELETED,
          Result.UNCHANGED: Decision.UNCHANGED, Result.SKIPPED: Decision.SKIPPED, Result.FAILED: Decision.FAILED,
          Result.COUPLED: Decision.COUPLED}


def digest(values: dict[str, Any]) -> str:
    """The hash of the values a record gives the other side (stored per side in the coupling)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
