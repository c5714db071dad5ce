"""Tables of the background jobs: full synchronization runs and lines, catch-up watermarks, the state of
the webhook registrations the subscription keeper maintains. Migration: `0003_jobs`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _utc() -> Column:
    return Column(DateTime(timezone=True), nullable=True)


def _utc_required() -> Column:
    return Column(DateTime(timezone=True), nullable=False)


class FullSyncRun(SQLModel, table=True):
    """One full synchronization started by an operator; its lines run in dependency order."""

    __tablename__ = "full_sync_run"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_column=_utc_required())
    finished_at: datetime | None = Field(default=None, sa_column=_utc())


class FullSyncLine(SQLModel, table=True):
    """One mapping of a run. `status`: ready | in_progress | finished | error.

    The worker running it holds a lease on the row itself (`owner`, `lease_until`, renewed every page);
    `attempt` grows on every (re)start, so a worker whose line was restarted under it notices and stops.
    """

    __tablename__ = "full_sync_line"
    __table_args__ = (UniqueConstraint("run_id", "mapping", name="uq_full_sync_line"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(index=True)
    mapping: str = Field(max_length=64)
    position: int = 0
    depends_on: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list of mapping names
    recommendation: str | None = Field(default=None, max_length=32)
    status: str = Field(default="ready", max_length=16)
    attempt: int = 0
    owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_column=_utc())
    started_at: datetime | None = Field(default=None, sa_column=_utc())
    finished_at: datetime | None = Field(default=None, sa_column=_utc())
    updated_at: datetime | None = Field(default=None, sa_column=_utc())
    message: str | None = Field(default=None, max_length=2000)
    inserted: int = 0
    modified: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    coupled: int = 0
    deleted: int = 0


class CatchUp(SQLModel, table=True):
    """Catch-up state of one mapping: a watermark per side (the newest source modified time seen) and the
    schedule. `requested_at` is set by an operator, the subscription keeper or the BC webhook door (entries it
    had to drop) to run it now. The `poll_*` columns are the BC polling job's (consumers/jobs/poll.py)."""

    __tablename__ = "catch_up"

    mapping: str = Field(primary_key=True, max_length=64)
    bc_watermark: datetime | None = Field(default=None, sa_column=_utc())
    dataverse_watermark: datetime | None = Field(default=None, sa_column=_utc())
    last_run_at: datetime | None = Field(default=None, sa_column=_utc())
    next_run_at: datetime | None = Field(default=None, sa_column=_utc())
    requested_at: datetime | None = Field(default=None, sa_column=_utc())
    runs: int = 0
    last_found: int = 0
    last_error: str | None = Field(default=None, max_length=2000)
    # Polling of a BC side that cannot be subscribed (mapping_config.bc_delivery = "poll").
    poll_watermark: datetime | None = Field(default=None, sa_column=_utc())
    polled_at: datetime | None = Field(default=None, sa_column=_utc())
    polls: int = 0
    poll_error: str | None = Field(default=None, max_length=2000)


class SubscriptionState(SQLModel, table=True):
    """A BC webhook subscription or the Dataverse webhook registration, as the keeper last saw it.
    `key`: `bc:<resource>` or `dataverse:<endpoint name>`."""

    __tablename__ = "subscription_state"

    key: str = Field(primary_key=True, max_length=400)
    system: str = Field(max_length=16)  # bc | dataverse
    resource: str = Field(max_length=400)
    subscription_id: str | None = Field(default=None, max_length=64)
    expires_at: datetime | None = Field(default=None, sa_column=_utc())
    status: str = Field(default="unknown", max_length=16)  # kept | renewed | created | failed | missing
    last_check: datetime | None = Field(default=None, sa_column=_utc())
    last_change: datetime | None = Field(default=None, sa_column=_utc())
    error: str | None = Field(default=None, max_length=2000)


class ReconcileJob(SQLModel, table=True):
    """One reconciliation of a mapping's side: a collection notification (BC), a catch-up's or a poll's
    "read everything" (`full`: couplings whose record is gone are found too). It runs as a leased job in a
    worker, not inside the broker delivery that asked for it, so a run over tens of thousands of records never
    outlives RabbitMQ's consumer timeout. `status`: waiting | running | finished | failed.

    `request_key` is the asking event's dedupe key: a redelivered event asks once. `attempt` grows on every
    (re)start; the worker holding `owner`/`lease_until` renews it while it runs, and a job whose worker died is
    taken up again when the lease ran out."""

    __tablename__ = "reconcile_job"

    id: int | None = Field(default=None, primary_key=True)
    request_key: str = Field(max_length=400, unique=True)
    mapping: str = Field(max_length=64, index=True)
    side: str = Field(max_length=16)
    filter: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    full: bool = False
    status: str = Field(default="waiting", max_length=16, index=True)
    attempt: int = 0
    owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_column=_utc())
    not_before: datetime | None = Field(default=None, sa_column=_utc())
    requested_at: datetime = Field(sa_column=_utc_required())
    started_at: datetime | None = Field(default=None, sa_column=_utc())
    finished_at: datetime | None = Field(default=None, sa_column=_utc())
    updated_at: datetime | None = Field(default=None, sa_column=_utc())
    listed: int = 0  # records read from the source so far
    checked: int = 0  # couplings the listing did not show, read again (full only)
    failed: int = 0
    correlation_id: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=2000)
