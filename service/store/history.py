"""The per-record history (`record_history`): one entry per run of one record of a mapping — the events it served,
what the integration decided and why, the fields it changed (old → new on the destination) — written by the sync
engine in the run's own unit of work, read by the admin API (a pair's timeline; search across mappings), pruned by
age by the workers' jobs (`BCSYNC_HISTORY_DAYS`).

An entry is about a *pair*: it carries whichever of the two ids are known (`bc_id`, `dataverse_id`), so either
side's id finds it, before and after the records are coupled.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.vocabulary import Decision, FieldChange, Result, Side
from service.logging import redact_text
from service.store.models import Coupling, RecordHistory
from service.store.outbox import aware, utcnow

VALUE_CHARS = 500  # a value's text form at most (BCSYNC_HISTORY_VALUE_CHARS)
CUT_MARK = "…"  # ends a value, reason, label or term that was cut
REASON_CHARS = 2000
LABEL_CHARS = 200
TERM_CHARS = 200
SEARCH_CHARS = 2000  # the whole `search` column
ID_CHARS = 64
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # a record id (terms are lower-case)
EVENT_CHARS = 200  # one string of an event (ids, correlation ids, times)
EVENTS_KEPT = 20  # a run that served more events (they fold into one run) keeps the latest ones
EVENT_KEYS = ("event_id", "source", "change_type", "correlation_id", "received_at", "occurred_at")
SEARCH_HITS = 200  # hits of one search at most
SEARCH_SCAN = 2000  # matching entries one search looks at, newest first
LABEL_LOOKBACK = 20  # entries looked at for a pair's latest label
_ESCAPE = "!"  # LIKE's escape character in searches (a backslash reads differently per database)
H = RecordHistory.__table__  # type: ignore[attr-defined]


def entry(*, mapping: str, side: Side, record_id: str, bc_id: str | None, dataverse_id: str | None, kind: str,
          result: Result, decision: Decision, reason: str | None, events: Sequence[dict[str, Any]],
          changes: Sequence[FieldChange], sensitive: Collection[str], correlation_id: str | None, duration_ms: int,
          label: str | None, terms: Iterable[str], value_chars: int = VALUE_CHARS,
          lag_ms: int | None = None) -> RecordHistory:
    """The history entry of one run (not added to any session: the caller adds it to the run's unit of work).

    - `side`/`record_id`: the record that changed (the run's source). Its id fills `bc_id` or `dataverse_id` when
      that one is not given; ids are stored lower-case, as couplings are.
    - `at` is now: an entry is built when its run ends.
    - `reason` is redacted (`service.logging.redact_text`) and cut to 2,000 characters.
    - `events`: the events the run served, each reduced to event_id, source, change_type, correlation_id,
      received_at and occurred_at (times as ISO 8601 text); the latest 20 are kept.
    - `changes`: every field change as {side, field, old, new, sensitive}. A change of a field named in
      `sensitive` (either side's names; a composite column such as `firstname+lastname` also by any of its parts)
      is kept as changed with `old` and `new` None and `sensitive` true: never its values. Other values are kept
      JSON-able (numbers, booleans and None as they are; anything else by its JSON or `str` form), and a value
      whose text form is longer than `value_chars` is stored as that text cut to `value_chars` characters, the
      last of which is the mark "…".
    - `label`: the display title (cut to 200 characters); it is also a search term.
    - `terms`: what a search should find the record by (name, number, e-mail, …): lower-cased, whitespace
      collapsed, deduplicated, each cut to 200 characters, one a line in `search`, which holds at most 2,000
      characters (terms past that are left out).
    """
    side = Side(side)
    source_id = _id(record_id)
    title = _cut(" ".join(label.split()), LABEL_CHARS) if label and label.strip() else None
    hidden = frozenset(sensitive)
    return RecordHistory(
        mapping=mapping,
        bc_id=_id(bc_id) if bc_id else (source_id if side is Side.BC else None),
        dataverse_id=_id(dataverse_id) if dataverse_id else (source_id if side is Side.DATAVERSE else None),
        side=side.value, at=utcnow(), kind=kind[:16], result=Result(result).value, decision=Decision(decision).value,
        reason=_cut(redact_text(reason), REASON_CHARS) if reason else None,
        events=json.dumps([_event(e) for e in list(events)[-EVENTS_KEPT:]], ensure_ascii=False),
        changes=json.dumps([_change(c, hidden, value_chars) for c in changes], ensure_ascii=False),
        correlation_id=correlation_id[:128] if correlation_id else None,
        duration_ms=max(0, int(duration_ms)), lag_ms=max(0, int(lag_ms)) if lag_ms is not None else None,
        label=title, search=search_text([title or "", *terms]))


def _id(record_id: str) -> str:
    return record_id.strip().lower()[:ID_CHARS]


def _cut(text: str, chars: int) -> str:
    """`text`, or its first `chars - 1` characters and the mark "…" when it is longer than `chars`."""
    return text if len(text) <= chars else text[:max(chars - 1, 0)] + CUT_MARK


def _plain(value: object) -> object:
    """`json.dumps`' default for what JSON has no type for: dates in ISO 8601, anything else by `str`."""
    return value.isoformat() if isinstance(value, date) else str(value)


def value_of(value: Any, chars: int = VALUE_CHARS) -> Any:
    """A field's value as the history keeps it: JSON-able, its text form at most `chars` characters."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if len(str(value)) <= chars else _cut(str(value), chars)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value, chars)
    try:
        text = json.dumps(value, default=_plain, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # e.g. NaN inside, or keys JSON cannot have
        text = str(value)
        return _cut(text, chars)
    return _cut(text, chars) if len(text) > chars else json.loads(text)


def is_sensitive(field: str, sensitive: Collection[str]) -> bool:
    return field in sensitive or any(part in sensitive for part in field.split("+") if part)


def _change(change: FieldChange, sensitive: Collection[str], chars: int) -> dict[str, Any]:
    hidden = is_sensitive(change.field, sensitive)
    return {"side": Side(change.side).value, "field": change.field[:LABEL_CHARS],
            "old": None if hidden else value_of(change.old, chars),
            "new": None if hidden else value_of(change.new, chars), "sensitive": hidden}


def _event(event: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in EVENT_KEYS:
        value = event.get(key)
        out[key] = None if value is None else _cut(value if isinstance(value, str) else str(_plain(value)), EVENT_CHARS)
    return out


def term(text: str) -> str:
    """A search term as stored and looked for: lower-case, whitespace collapsed, at most 200 characters."""
    return _cut(" ".join(str(text).split()).lower(), TERM_CHARS)


def search_text(terms: Iterable[str]) -> str | None:
    """The `search` column: distinct terms one a line, at most SEARCH_CHARS characters in all."""
    kept: list[str] = []
    size = 0
    for each in dict.fromkeys(term(t) for t in terms if t):
        if not each:
            continue
        grown = size + len(each) + (1 if kept else 0)
        if grown > SEARCH_CHARS:
            break
        kept.append(each)
        size = grown
    return "\n".join(kept) or None


def events_of(row: RecordHistory) -> list[dict[str, Any]]:
    return list(json.loads(row.events or "[]"))


def changes_of(row: RecordHistory) -> list[dict[str, Any]]:
    return list(json.loads(row.changes or "[]"))


def _keys(ids: Collection[str] | None) -> list[str]:
    return sorted({i.strip().lower() for i in ids or () if i and i.strip()})


async def for_pair(session: AsyncSession, mapping: str, ids: Collection[str], *, limit: int,
                   before_id: int | None) -> list[RecordHistory]:
    """The entries of a mapping whose `bc_id` or `dataverse_id` is one of `ids`, newest first (by `at`, then id),
    at most `limit`; with `before_id`, those that come after that entry in this order (the next page)."""
    return await for_ids(session, mapping, bc_ids=ids, dataverse_ids=ids, limit=limit, before_id=before_id)


async def for_ids(session: AsyncSession, mapping: str, *, bc_ids: Collection[str] | None,
                  dataverse_ids: Collection[str] | None, limit: int, before_id: int | None) -> list[RecordHistory]:
    """`for_pair` with each id on its own side: entries whose `bc_id` is one of `bc_ids` or whose `dataverse_id` is
    one of `dataverse_ids` (a BC id never finds a Dataverse record's entries)."""
    bc_keys, dataverse_keys = _keys(bc_ids), _keys(dataverse_ids)
    if not bc_keys and not dataverse_keys:
        return []
    query = select(RecordHistory).where(H.c.mapping == mapping,
                                        or_(H.c.bc_id.in_(bc_keys), H.c.dataverse_id.in_(dataverse_keys)))
    if before_id is not None:
        before_at = select(H.c.at).where(H.c.id == before_id).scalar_subquery()
        query = query.where(or_(H.c.at < before_at, and_(H.c.at == before_at, H.c.id < before_id)))
    query = query.order_by(H.c.at.desc(), H.c.id.desc()).limit(max(1, limit))
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True)
class Hit:
    """One record pair a search found: its latest entry's label, decision and time (None: no history yet)."""

    mapping: str
    bc_id: str | None
    dataverse_id: str | None
    label: str | None
    last_decision: str | None
    last_at: datetime | None
    coupled: bool


def _escape_like(text: str) -> str:
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("%", f"{_ESCAPE}%").replace("_", f"{_ESCAPE}_")


async def search(session: AsyncSession, q: str, *, limit: int) -> list[Hit]:
    """Record pairs across mappings found by `q`: entries whose search terms contain it (case-insensitive; `%`
    and `_` are plain characters), entries and couplings whose BC or Dataverse id is `q`. One hit per pair — the
    couplings join an entry that knew one id to the pair's other id — newest first (pairs without history last),
    at most `limit` (and SEARCH_HITS). The terms are looked through without an index: a search reads the history
    of the retention period once."""
    text = term(q)
    if not text:
        return []
    bound = max(1, min(limit, SEARCH_HITS))
    ident = text[:ID_CHARS]
    # Both systems' record ids are GUIDs: only a GUID is looked up as an id (the coupling table has no index on an
    # id alone, so that lookup reads it whole: 14 ms at 100,000 couplings on PostgreSQL).
    is_id = GUID.fullmatch(ident) is not None
    wanted = H.c.search.like(f"%{_escape_like(text)}%", escape=_ESCAPE)
    matching = (select(H.c.mapping, H.c.bc_id, H.c.dataverse_id)
                .where(or_(wanted, H.c.bc_id == ident, H.c.dataverse_id == ident) if is_id else wanted)
                .order_by(H.c.at.desc(), H.c.id.desc()).limit(SEARCH_SCAN))
    found: list[tuple[str, str | None, str | None]] = list(dict.fromkeys(
        (m, b, d) for m, b, d in (await session.execute(matching))))
    direct: list[Coupling] = []
    if is_id:
        by_id = select(Coupling).where(or_(col(Coupling.bc_id) == ident, col(Coupling.dataverse_id) == ident))
        direct = list((await session.execute(by_id.order_by(col(Coupling.id)).limit(bound))).scalars())
    coupled = await _couplings_of(session, found)
    pairs: dict[tuple[str, str | None, str | None], bool] = {}
    for mapping, bc_id, dataverse_id in found:
        coupling = coupled.get((mapping, "bc", bc_id or "")) or coupled.get((mapping, "dataverse", dataverse_id or ""))
        key = (mapping, coupling.bc_id, coupling.dataverse_id) if coupling else (mapping, bc_id, dataverse_id)
        pairs.setdefault(key, coupling is not None)
    for coupling in direct:
        pairs.setdefault((coupling.mapping, coupling.bc_id, coupling.dataverse_id), True)
    chosen = _whole_pairs(pairs)[:bound]
    recent = await _recent_of(session, [key for key, _ in chosen])
    hits: list[Hit] = []
    for (mapping, bc_id, dataverse_id), is_coupled in chosen:
        both = {r.id: r for r in (*recent.get((mapping, "bc", bc_id or ""), ()),
                                  *recent.get((mapping, "dataverse", dataverse_id or ""), ()))}
        rows = sorted(both.values(), key=lambda r: r.id, reverse=True)[:LABEL_LOOKBACK]
        latest = rows[0] if rows else None
        hits.append(Hit(mapping, bc_id, dataverse_id, label=next((r.label for r in rows if r.label), None),
                        last_decision=latest.decision if latest else None,
                        last_at=aware(latest.at) if latest else None, coupled=is_coupled))
    return sorted(hits, key=lambda h: (h.last_at is not None, h.last_at or utcnow()), reverse=True)


async def _recent_of(session: AsyncSession, pairs: Sequence[tuple[str, str | None, str | None]]
                     ) -> dict[tuple[str, str, str], list[Any]]:
    """The newest entries (LABEL_LOOKBACK at most) of each pair, by (mapping, side, id) of either of its ids, newest
    first: one query a side over the narrow columns, through the (mapping, id) indexes (a query per pair cost a
    search about 40 ms at 100 hits; one query ordered by id over both sides made PostgreSQL walk the whole table)."""
    out: dict[tuple[str, str, str], list[Any]] = {}
    for side, column in (("bc", H.c.bc_id), ("dataverse", H.c.dataverse_id)):
        wanted = {(m, i) for m, b, d in pairs if (i := b if side == "bc" else d)}
        if not wanted:
            continue
        rank = func.row_number().over(partition_by=[H.c.mapping, column], order_by=H.c.id.desc()).label("rank")
        ranked = (select(H.c.id, H.c.mapping, H.c.bc_id, H.c.dataverse_id, H.c.label, H.c.decision, H.c.at, rank)
                  .where(H.c.mapping.in_(sorted({m for m, _ in wanted})), column.in_(sorted({i for _, i in wanted})))
                  .subquery())
        query = select(ranked).where(ranked.c.rank <= LABEL_LOOKBACK).order_by(ranked.c.id.desc())
        for row in (await session.execute(query)).all():
            record_id = row.bc_id if side == "bc" else row.dataverse_id
            if (row.mapping, record_id) in wanted:
                out.setdefault((row.mapping, side, record_id), []).append(row)
    return out


def _whole_pairs(pairs: dict[tuple[str, str | None, str | None], bool]
                 ) -> list[tuple[tuple[str, str | None, str | None], bool]]:
    """The pairs, without one that knew a single id when another of the same mapping has that id and the other."""
    whole = [(m, b, d) for m, b, d in pairs if b and d]
    known = {(m, "bc", b) for m, b, _ in whole} | {(m, "dataverse", d) for m, _, d in whole}

    def alone(mapping: str, bc_id: str | None, dataverse_id: str | None) -> bool:
        return (mapping, "bc", bc_id) not in known and (mapping, "dataverse", dataverse_id) not in known

    return [(key, c) for key, c in pairs.items() if (key[1] and key[2]) or alone(*key)]


async def _couplings_of(session: AsyncSession, found: Iterable[tuple[str, str | None, str | None]]
                        ) -> dict[tuple[str, str, str], Any]:
    """The couplings of these (mapping, bc_id, dataverse_id) entries (their mapping and ids only), by (mapping, side,
    id) of either side."""
    found = list(found)
    bc_ids = {(m, b) for m, b, _ in found if b}
    dataverse_ids = {(m, d) for m, _, d in found if d}
    out: dict[tuple[str, str, str], Any] = {}
    mappings = {m for m, _ in bc_ids | dataverse_ids}
    if not mappings:
        return out
    query = select(col(Coupling.mapping), col(Coupling.bc_id), col(Coupling.dataverse_id)).where(
        col(Coupling.mapping).in_(sorted(mappings)), or_(
        col(Coupling.bc_id).in_(sorted({b for _, b in bc_ids})),
        col(Coupling.dataverse_id).in_(sorted({d for _, d in dataverse_ids}))))
    for coupling in (await session.execute(query)).all():
        if (coupling.mapping, coupling.bc_id) in bc_ids or (coupling.mapping, coupling.dataverse_id) in dataverse_ids:
            out[(coupling.mapping, "bc", coupling.bc_id)] = coupling
            out[(coupling.mapping, "dataverse", coupling.dataverse_id)] = coupling
    return out


async def prune(session: AsyncSession, older_than: datetime, batch: int) -> int:
    """Delete at most `batch` of the oldest entries from before `older_than`; the number deleted. On PostgreSQL,
    rows another worker's prune is deleting are skipped (not waited for)."""
    oldest = select(H.c.id).where(H.c.at < older_than).order_by(H.c.at, H.c.id).limit(max(1, batch))
    if session.get_bind().dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    result = await session.execute(delete(H).where(H.c.id.in_(oldest)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def refresh_statistics(session: AsyncSession) -> None:
    """SQLite gathers no planner statistics by itself: without them it reads every entry of a mapping for one
    pair's history instead of using the id indexes (118 ms rather than 1.7 ms at 100,000 entries, see
    docs/benchmarks.md). PostgreSQL's autovacuum keeps its own."""
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(text("ANALYZE record_history"))


async def recent_runs(session: AsyncSession, since: datetime, *, limit: int) -> list[tuple[str, datetime, int | None]]:
    """(mapping, at, lag_ms) of the newest runs since `since`, at most `limit` (the console's last-hour chart)."""
    rows = await session.execute(
        select(H.c.mapping, H.c.at, H.c.lag_ms).where(H.c.at >= since).order_by(H.c.at.desc()).limit(limit))
    return [(m, aware(at), lag) for m, at, lag in rows.all()]
