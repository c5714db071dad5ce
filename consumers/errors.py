"""What can stop one record from being applied, and how the worker treats each."""

from __future__ import annotations


class Skip(Exception):
    """The record does not take part (filter, direction, nothing to do): counted as skipped."""


class Filtered(Skip):
    """Excluded by the mapping's filter (a skip the record history names as such)."""


class RecordBusy(Exception):
    """Another worker holds this record right now: try again shortly, without using up retries."""


class MappingHeld(Exception):
    """The mapping was put on hold: nothing of it is applied; its event waits in the mapping's queue."""

    def __init__(self, mapping: str) -> None:
        super().__init__(f"{mapping} is on hold")
        self.mapping = mapping


class CoupledMeanwhile(Exception):
    """The record's match was coupled by another run while this one looked: run again with the coupling."""


class SyncFailure(Exception):
    """The record could not be applied; retried with back-off, and listed in the error list."""

    waiting_for: str | None = None


class MissingDependency(SyncFailure):
    """A record it references is not coupled and cannot be synchronized in that direction."""

    def __init__(self, message: str, mapping: str, side: str, record_id: str) -> None:
        super().__init__(message)
        self.waiting_for = f"{mapping}:{side}:{record_id.lower()}"


class MappingUnavailable(MissingDependency):
    """The referenced record's mapping cannot run in this installation (setup keeps it off)."""


class Conflict(SyncFailure):
    """Both sides changed a field since the last synchronization and the policy is `none`."""
