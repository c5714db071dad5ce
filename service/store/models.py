"""Tables of the store (SQLModel). Schema changes go through Alembic migrations in `migrations/`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _utc() -> Column:
    return Column(DateTime(timezone=True), nullable=True)


class OutboxEvent(SQLModel, table=True):
    """A change event accepted by a webhook: stored before the 202, relayed to RabbitMQ after.

    `dedupe_key` is unique, so the same delivery stored twice is one row (and one message). Rows stay
    `dedupe_days` after publication, which is the window in which repeated deliveries are recognised.
    """

    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_event_pending", "published_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    routing_key: str = Field(max_length=200)
    source: str = Field(max_length=32)
    entity: str = Field(max_length=128)
    correlation_id: str = Field(max_length=128)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    published_at: datetime | None = Field(default=None, sa_column=_utc())
    claimed_until: datetime | None = Field(default=None, sa_column=_utc())
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)


class Coupling(SQLModel, table=True):
    """A BC record and a Dataverse record kept equal by one mapping.

    The hashes are of the mapped values each side last had when the integration synchronized them
    (`bc_hash`: the BC record's values as they map to Dataverse; `dataverse_hash`: the other way round).
    A side whose current hash equals the stored one has not changed since: that is how our own writes,
    coming back as notifications, count as unchanged.
    """

    __tablename__ = "coupling"
    __table_args__ = (
        UniqueConstraint("mapping", "bc_id", name="uq_coupling_bc"),
        UniqueConstraint("mapping", "dataverse_id", name="uq_coupling_dataverse"),
        Index("ix_coupling_bc_key", "mapping", "bc_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mapping: str = Field(max_length=64, index=True)
    bc_id: str = Field(max_length=64)
    dataverse_id: str = Field(max_length=64)
    bc_modified: datetime | None = Field(default=None, sa_column=_utc())
    dataverse_modified: datetime | None = Field(default=None, sa_column=_utc())
    bc_hash: str | None = Field(default=None, max_length=64)
    dataverse_hash: str | None = Field(default=None, max_length=64)
    last_result: str = Field(default="coupled", max_length=32)
    attempts: int = 0
    info: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON: e.g. the BC order number
    # The side(s) the last run wrote ("bc", "dataverse", "both"): a run of that side that finds the record as
    # our write left it (hash and modified time) is an echo, not someone's change that carried nothing new.
    written: str | None = Field(default=None, max_length=16)
    # What each side's record held for the fields this mapping writes to it, with its `@odata.etag`, as the last
    # run left or read it (JSON). A write goes out with that ETag and without reading the record first: the ETag
    # proves the record is still so (412 → read, then the usual path), and only the fields that differ are sent.
    bc_state: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    dataverse_state: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The BC record's `code` (currencies, salespeople, units of measure): lookups by code read the coupling, not BC.
    bc_key: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RecordLock(SQLModel, table=True):
    """A short lease on one record of one mapping, so that two workers never apply changes to the same
    record at once (and never create it twice)."""

    __tablename__ = "record_lock"

    key: str = Field(primary_key=True, max_length=200)
    owner: str = Field(max_length=64)
    locked_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class SyncJob(SQLModel, table=True):
    """The integration synch job log: counters per mapping, direction and run (live events are counted
    per hour)."""

    __tablename__ = "sync_job"
    __table_args__ = (UniqueConstraint("mapping", "direction", "kind", "bucket", name="uq_sync_job_bucket"),)

    id: int | None = Field(default=None, primary_key=True)
    mapping: str = Field(max_length=64, index=True)
    direction: str = Field(max_length=16)
    kind: str = Field(max_length=16)  # live | reconcile | full
    bucket: str = Field(max_length=64)  # the hour for live runs, the run id otherwise
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=_utc())
    inserted: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    coupled: int = 0


class SyncError(SQLModel, table=True):
    """A record that could not be synchronized: what, why, how often; retried or dismissed by operators."""

    __tablename__ = "sync_error"
    __table_args__ = (UniqueConstraint("mapping", "source", "source_id", name="uq_sync_error_record"),)

    id: int | None = Field(default=None, primary_key=True)
    mapping: str = Field(max_length=64, index=True)
    source: str = Field(max_length=32)
    source_id: str = Field(max_length=64)
    destination_id: str | None = Field(default=None, max_length=64)
    message: str = Field(max_length=2000)
    attempts: int = 1
    state: str = Field(default="open", max_length=16)  # open | skipped | resolved
    waiting_for: str | None = Field(default=None, max_length=200)  # "<mapping>:<side>:<id>" of a missing dependency
    event: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # the ChangeEvent, for retry
    first_seen: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_seen: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class MappingConfig(SQLModel, table=True):
    """An operator's changes to a mapping's defaults (JSON), its hold state, and what setup found out about it."""

    __tablename__ = "mapping_config"

    mapping: str = Field(primary_key=True, max_length=64)
    config: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    on_hold: bool = False
    # Set by setup: why the mapping is kept off (its API is not installed, the live schema lacks what it maps).
    unavailable: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    bc_delivery: str | None = Field(default=None, max_length=8)  # push | poll (BC cannot notify it); None: unknown
    version: int = 1
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class MappingConfigVersion(SQLModel, table=True):
    """Every accepted change of a mapping: who can see what changed when, and go back."""

    __tablename__ = "mapping_config_version"
    __table_args__ = (UniqueConstraint("mapping", "version", name="uq_mapping_config_version"),)

    id: int | None = Field(default=None, primary_key=True)
    mapping: str = Field(max_length=64, index=True)
    version: int
    config: str = Field(sa_column=Column(Text, nullable=False))
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


import service.store.job_models  # noqa: E402, F401 - the jobs tables (full sync, catch-up, subscriptions)


class DecoupledRecord(SQLModel, table=True):
    """A record whose coupled record was deleted under the remove-coupling policy: it is left alone (not
    re-created on the other side) until an operator couples it again or runs a full synchronization."""

    __tablename__ = "decoupled_record"
    __table_args__ = (UniqueConstraint("mapping", "side", "record_id", name="uq_decoupled_record"),)

    id: int | None = Field(default=None, primary_key=True)
    mapping: str = Field(max_length=64)
    side: str = Field(max_length=16)
    record_id: str = Field(max_length=64)
    decoupled_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class Installation(SQLModel, table=True):
    """Values generated once per installation and shared by every process (api, workers, setup), one row per
    key: e.g. `integration_tag`, the `?tag=` of our Dataverse writes. The first process that needs a value
    inserts it (service/store/installation.py)."""

    __tablename__ = "installation"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RecordHistory(SQLModel, table=True):
    """One run of one record of one mapping: the event(s) it served, what the integration decided and why, the
    fields it changed (old → new; sensitive fields without their values). Written by the sync engine in the run's
    unit of work (service/store/history.py), read by `GET /admin/records/{mapping}/{side}/{id}/history`, pruned
    by age (`BCSYNC_HISTORY_DAYS`)."""

    __tablename__ = "record_history"
    __table_args__ = (
        Index("ix_record_history_bc", "mapping", "bc_id"),
        Index("ix_record_history_dataverse", "mapping", "dataverse_id"),
        Index("ix_record_history_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mapping: str = Field(max_length=64)
    bc_id: str | None = Field(default=None, max_length=64)
    dataverse_id: str | None = Field(default=None, max_length=64)
    side: str = Field(max_length=16)  # the side whose record changed: bc | dataverse
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))  # when the run ended
    kind: str = Field(max_length=16)  # live | reconcile | full
    result: str = Field(max_length=16)  # schemas.vocabulary.Result
    decision: str = Field(max_length=16)  # schemas.vocabulary.Decision
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    events: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list of the events served
    changes: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list of field changes
    correlation_id: str | None = Field(default=None, max_length=128)  # sent with the run's requests
    duration_ms: int = 0
    # A write's lag: from the source's modified time to the end of the run (what bcsync_sync_lag_seconds observes);
    # null when nothing was written. The console's overview charts it per minute.
    lag_ms: int | None = None
    label: str | None = Field(default=None, max_length=200)  # a display title, e.g. "10000 Adatum Corporation"
    search: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # lower-case terms, one a line
