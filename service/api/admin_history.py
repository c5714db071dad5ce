"""A record pair's history (every run of it: what it served, what was decided and why, what changed) and the
search that finds a pair by name, number, e-mail or id across mappings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from schemas.vocabulary import Decision, Result, Side
from service.api.admin import require_admin
from service.api.admin_mappings import MappingName, known
from service.api.deps import DatabaseDep
from service.store import couplings, history
from service.store.models import Coupling, RecordHistory
from service.store.outbox import aware

router = APIRouter(prefix="/admin/records", tags=["admin: history"], dependencies=[Depends(require_admin)])
RecordId = Annotated[str, Path(min_length=1, max_length=64, examples=["5f1e2d3c-0000-4000-8000-00000000000a"],
                               description="the record's id on `side` (either side's id finds the pair)")]
Before = Annotated[int | None, Query(ge=1, le=2**31 - 1, description="the `next_before` of the previous page")]


class HistoryEvent(BaseModel):
    """An event the run served (several events of one record fold into one run)."""

    event_id: str | None
    source: str | None  # business_central | dataverse
    change_type: str | None  # created | updated | deleted | collection
    correlation_id: str | None
    received_at: str | None  # ISO 8601, as stored
    occurred_at: str | None


class HistoryChange(BaseModel):
    """A field the run wrote on `side`, from `old` to `new`; a sensitive field shows neither value."""

    side: Side
    field: str
    old: Any = None
    new: Any = None
    sensitive: bool = False


class HistoryEntry(BaseModel):
    id: int
    at: datetime  # when the run ended
    kind: str  # live | reconcile | full
    side: Side  # the side whose record changed (the run's source)
    result: Result
    decision: Decision
    reason: str | None
    events: list[HistoryEvent]
    changes: list[HistoryChange]
    correlation_id: str | None  # sent with the run's requests to the other system
    duration_ms: int
    label: str | None


class RecordHistoryPage(BaseModel):
    mapping: str
    side: Side
    id: str
    bc_id: str | None
    dataverse_id: str | None
    coupled: bool
    entries: list[HistoryEntry] = Field(description="oldest first within the page")
    next_before: int | None = Field(description="`before` of the next (older) page; null on the last page")


class SearchHit(BaseModel):
    mapping: str
    bc_id: str | None
    dataverse_id: str | None
    label: str | None
    last_decision: Decision | None  # null: coupled, no history yet
    last_at: datetime | None
    coupled: bool


class SearchResult(BaseModel):
    q: str
    hits: list[SearchHit]


def _entry(row: RecordHistory) -> HistoryEntry:
    assert row.id is not None
    return HistoryEntry(id=row.id, at=aware(row.at), kind=row.kind, side=Side(row.side), result=Result(row.result),
                        decision=Decision(row.decision), reason=row.reason,
                        events=[HistoryEvent.model_validate(e) for e in history.events_of(row)],
                        changes=[HistoryChange.model_validate(c) for c in history.changes_of(row)],
                        correlation_id=row.correlation_id, duration_ms=row.duration_ms, label=row.label)


@router.get("/search", response_model=SearchResult)
async def search_records(db: DatabaseDep, q: Annotated[str, Query(min_length=1, max_length=200)],
                         limit: Annotated[int, Query(ge=1, le=200)] = 50) -> SearchResult:
    """Record pairs across mappings by name, number, e-mail (what their history entries were labelled and
    tagged with, case-insensitive, part of a word is enough) or either side's id (whole), newest first: one hit
    per pair with its latest label and decision. A coupled pair without history yet is found by its ids."""
    text = q.replace("\x00", "")
    async with db.session() as session:
        hits = await history.search(session, text, limit=limit) if text.strip() else []
    return SearchResult(q=q, hits=[SearchHit(mapping=h.mapping, bc_id=h.bc_id, dataverse_id=h.dataverse_id,
                                             label=h.label, last_decision=Decision(h.last_decision)
                                             if h.last_decision else None, last_at=h.last_at, coupled=h.coupled)
                                   for h in hits])


@router.get("/{mapping}/{side}/{record_id}/history", response_model=RecordHistoryPage, responses={404: {}})
async def record_history(mapping: MappingName, side: Side, record_id: RecordId, db: DatabaseDep,
                         limit: Annotated[int, Query(ge=1, le=500)] = 100,
                         before: Before = None) -> RecordHistoryPage:
    """The history of a record pair, found by either side's id: one entry per run of the record (the events it
    served, the decision and its reason, the fields written with old and new values, the correlation id of the
    requests, the duration). The newest `limit` entries (or those before `before`), oldest first; sensitive
    fields show as changed without values. Kept BCSYNC_HISTORY_DAYS days."""
    known(mapping)
    wanted = record_id.strip().lower()
    if not wanted or "\x00" in wanted:
        raise HTTPException(404, f"no history of {mapping} {side.value} record {record_id!r}")
    async with db.session() as session:
        coupling = await couplings.find(session, mapping, side.value, wanted)
        bc_ids = {wanted} if side is Side.BC else set()
        dataverse_ids = {wanted} if side is Side.DATAVERSE else set()
        if coupling is not None:
            bc_ids.add(coupling.bc_id)
            dataverse_ids.add(coupling.dataverse_id)
        rows = await history.for_ids(session, mapping, bc_ids=bc_ids, dataverse_ids=dataverse_ids, limit=limit + 1,
                                     before_id=before)
        if not rows and coupling is None and (before is None or not await history.for_ids(
                session, mapping, bc_ids=bc_ids, dataverse_ids=dataverse_ids, limit=1, before_id=None)):
            raise HTTPException(404, f"no history of {mapping} {side.value} record {wanted} and no coupling: "
                                     f"nothing synchronized it in the last days kept (BCSYNC_HISTORY_DAYS)")
    page = rows[:limit]
    bc_id, dataverse_id = _ids(side, wanted, coupling, rows)
    return RecordHistoryPage(mapping=mapping, side=side, id=wanted, bc_id=bc_id, dataverse_id=dataverse_id,
                             coupled=coupling is not None, entries=[_entry(r) for r in reversed(page)],
                             next_before=page[-1].id if len(rows) > limit else None)


def _ids(side: Side, wanted: str, coupling: Coupling | None,
         rows: list[RecordHistory]) -> tuple[str | None, str | None]:
    """Both ids of the pair: the coupling's, else the given one and what the newest entry knew of the other."""
    if coupling is not None:
        return coupling.bc_id, coupling.dataverse_id
    other = next((r.dataverse_id if side is Side.BC else r.bc_id for r in rows
                  if (r.dataverse_id if side is Side.BC else r.bc_id)), None)
    return (wanted, other) if side is Side.BC else (other, wanted)
