"""Answers of the couplings, job log and error routes (service/api/admin_records.py): the store's rows
(service/store/models.py) as the admin API shows them. Timestamps are the stored ones (SQLite keeps no zone)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CouplingOut(BaseModel):
    """A BC record and a Dataverse record kept equal by one mapping (the store's `coupling` row)."""

    id: int
    mapping: str
    bc_id: str
    dataverse_id: str
    bc_modified: datetime | None = Field(description="the BC record's modified time when last synchronized")
    dataverse_modified: datetime | None = Field(description="the Dataverse record's modified time then")
    bc_hash: str | None = Field(description="hash of the BC record's mapped values when last synchronized")
    dataverse_hash: str | None = Field(description="hash of the Dataverse record's mapped values then")
    last_result: str = Field(description='e.g. "coupled", "coupled by hand", "coupled by match"')
    attempts: int
    info: str | None = Field(description="JSON text: what the mapping keeps of the pair (e.g. the BC order number)")
    written: str | None = Field(description="the side(s) the last run wrote: bc | dataverse | both")
    created_at: datetime
    updated_at: datetime


class MatchReport(BaseModel):
    """Match-based coupling of one mapping: counts, and at most 100 ids of each list."""

    mapping: str
    coupled: int = Field(description="pairs coupled by this run")
    already_coupled: int
    ambiguous: int = Field(description="BC records that match more than one Dataverse record")
    unmatched_bc: int
    unmatched_dataverse: int
    ambiguous_bc_ids: list[str]
    unmatched_bc_ids: list[str]
    unmatched_dataverse_ids: list[str]
    queued_for_creation: int | None = Field(
        default=None, description="with `create_missing` only: unmatched records queued for creation on the other side")


class SyncJobOut(BaseModel):
    """A job log entry: counters per mapping, direction and run (live events per hour)."""

    id: int
    mapping: str
    direction: str
    kind: str = Field(description="live | reconcile | full")
    bucket: str = Field(description="the hour for live runs, the run otherwise")
    started_at: datetime
    finished_at: datetime | None
    inserted: int
    modified: int
    deleted: int
    unchanged: int
    skipped: int
    failed: int
    coupled: int


class SyncErrorOut(BaseModel):
    """A record that could not be synchronized (the store's `sync_error` row without its stored event)."""

    id: int
    mapping: str
    source: str = Field(description="business_central | dataverse")
    source_id: str
    destination_id: str | None
    message: str
    attempts: int
    state: str = Field(description="open | skipped | resolved | dismissed")
    waiting_for: str | None = Field(description='"<mapping>:<side>:<id>" of a missing record it depends on')
    first_seen: datetime
    last_seen: datetime
    retryable: bool = Field(description="the event is kept: `POST /admin/errors/{id}/retry` can run it again")


class RetryAllResult(BaseModel):
    retried: int
