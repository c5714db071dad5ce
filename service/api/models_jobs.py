"""Request and answer models of the background job routes (service/api/admin_jobs.py): full synchronization,
webhook registrations, catch-up, reconciliations. The timestamps of runs, lines, catch-ups and registrations
are ISO 8601 strings with their UTC offset, as service/store/jobs.py writes them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

MappingNames = list[Annotated[str, Field(min_length=1)]]
NAMES_WANTED = 'mappings must be a non-empty list of mapping names, e.g. ["CUSTOMER"]'


class FullSyncRequest(BaseModel):
    """The optional body of `POST /admin/full-sync`: which mappings (all that it covers when absent or null)."""

    model_config = ConfigDict(extra="forbid")

    mappings: MappingNames | None = Field(default=None, min_length=1,
                                          description='mapping names, e.g. ["CUSTOMER"]; absent or null: all')

    @model_validator(mode="before")
    @classmethod
    def _as_before(cls, data: Any) -> Any:
        """These routes always read their body as JSON whatever its content type (e.g. `curl -d`), and answered
        an unusable one with these messages; FastAPI hands a body without a JSON content type over as bytes."""
        if isinstance(data, bytes | bytearray):
            if not data.strip():
                return {}
            try:
                data = json.loads(data)
            except ValueError:
                raise PydanticCustomError("json_invalid", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            if isinstance(data, BaseModel):
                return data
            raise PydanticCustomError("model_type", "the body must be a JSON object")
        allowed = set(cls.model_fields)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise PydanticCustomError("extra_forbidden", "unknown field(s) {unknown}; allowed: {allowed}",
                                      {"unknown": ", ".join(unknown), "allowed": ", ".join(sorted(allowed))})
        names = data.get("mappings")
        if names is not None and (not isinstance(names, list) or not names
                                  or not all(isinstance(n, str) and n for n in names)):
            raise PydanticCustomError("mappings", NAMES_WANTED)
        return data


class CatchUpRequest(FullSyncRequest):
    """The optional body of `POST /admin/catch-up`: which mappings (all when absent or null)."""


class ReviewLine(BaseModel):
    """A mapping as the full synchronization review sees it (as BC's "Full Synch. Review")."""

    mapping: str
    direction: str
    depends_on: list[str] = Field(description="the mappings of the full synchronization it waits for")
    couplings: int
    bc_records: int | None = Field(description="records taking part in BC; null when they could not be counted")
    dataverse_records: int | None = Field(description="the same in Dataverse (counts stop at 5,000)")
    recommendation: str = Field(description='"No records" | "Couple records" | "Full Synch."')


class FullSyncLineOut(BaseModel):
    """One mapping of a full synchronization run."""

    mapping: str
    position: int
    depends_on: list[str]
    recommendation: str | None
    status: str = Field(description="Ready | In Progress | Finished | Error")
    state: str = Field(description="ready | in_progress | finished | error")
    stuck: bool = Field(description="In Progress, but its worker stopped renewing its lease")
    attempt: int
    worker: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    message: str | None
    counts: dict[str, int] = Field(description="inserted, modified, deleted, unchanged, skipped, failed, coupled")


class FullSyncRunOut(BaseModel):
    id: int
    status: str = Field(description="in_progress | finished | error")
    created_at: str
    finished_at: str | None
    waiting_for_error: list[str] = Field(description="Ready lines that wait for a line in Error")
    lines: list[FullSyncLineOut]


class FullSyncStatus(BaseModel):
    run: FullSyncRunOut | None = Field(description="the latest run; null before the first")
    review: list[ReviewLine] | None = Field(default=None, description="absent with `review_lines=false`")
    unavailable: dict[str, str] = Field(description="mappings setup keeps off, with why (left out of runs)")


class FullSyncStarted(BaseModel):
    run: FullSyncRunOut
    review: list[ReviewLine]


class FullSyncRestarted(BaseModel):
    run: FullSyncRunOut


class SubscriptionOut(BaseModel):
    """A BC subscription or the Dataverse registration, as the keeper last saw it."""

    system: str = Field(description="bc | dataverse")
    resource: str
    id: str | None
    expires_at: str | None
    status: str = Field(description="kept | renewed | created | failed | missing")
    last_check: str | None
    last_change: str | None
    error: str | None


class Subscriptions(BaseModel):
    bc: list[SubscriptionOut]
    dataverse: list[SubscriptionOut]


class KeeperReportOut(BaseModel):
    """What a pass of the subscription keeper did."""

    bc: dict[str, list[str]]
    dataverse: dict[str, list[str]]
    recreated: list[str] = Field(description="registrations that had existed and were gone")
    caught_up: list[str] = Field(description="mappings whose catch-up was requested")
    errors: list[str]


class SubscriptionsRefresh(Subscriptions):
    report: KeeperReportOut


class CatchUpState(BaseModel):
    """A mapping's catch-up. A mapping that never ran one has only `mapping`, `minutes` and `on_hold`."""

    mapping: str
    bc_watermark: str | None = Field(default=None, description="the newest BC modified time seen")
    dataverse_watermark: str | None = Field(default=None, description="the newest Dataverse modified time seen")
    last_run_at: str | None = None
    next_run_at: str | None = None
    requested_at: str | None = Field(default=None, description="asked to run now (not run yet)")
    runs: int | None = None
    last_found: int | None = Field(default=None, description="changes the last run found")
    last_error: str | None = None
    minutes: float = Field(description="minutes between runs; 0: off")
    on_hold: bool


class CatchUpStates(BaseModel):
    mappings: list[CatchUpState]


class CatchUpRequested(BaseModel):
    requested: list[str]


class ReconcileJobOut(BaseModel):
    """One reconciliation (a collection notification, a catch-up's or a poll's read of everything)."""

    id: int
    mapping: str
    side: Literal["bc", "dataverse"]
    full: bool
    filter: str | None
    status: Literal["waiting", "running", "finished", "failed"]
    attempt: int
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    listed: int
    checked: int
    failed: int
    message: str | None
    correlation_id: str | None


class ReconcileJobList(BaseModel):
    jobs: list[ReconcileJobOut]
