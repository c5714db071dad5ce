"""Match keys: which record on the other side is this one? One matcher for the two uses.

- `Matcher.candidates`: per record (the worker, before it creates a record the other side may already have):
  the records on the other side whose match-key column equals this record's value, found with an OData
  `$filter` (`<column> eq '<value>'`). The first match key that has a value (and finds anything) decides; at
  most 5 records. Equality is the server's: both systems compare strings without regard to case, and the value
  is sent as it is (not trimmed).
- `Matcher.couple_all` ("Generate Integration IDs", admin API): couple every pair of records that exist on both
  sides and agree on a match key, without writing to either system. Keys compare as normalised text (trimmed,
  lower case) in memory: the Dataverse side's key values and ids are held (not the records), the BC side is
  streamed. A value that only spaces tell apart matches here, and not per record.

- `MatchIndex` (full synchronization): `candidates` for every record of a line without a request per record. The
  source side's key values are read first (by pages, those columns only: small), then the other side by pages,
  keeping whole records only for rows whose key value is among them; per record it answers as `candidates`
  would: the first key with a value that finds any decides, equality as the servers compare (case-insensitive,
  not trimmed), at most MAX_CANDIDATES in the listing's order. The line's runs reach it through `PREFETCHED`.

Both skip a key whose value is missing (None or "") and read the mapping's keys in the same order. Listings
ask for the largest pages the services allow: 20,000 rows in Business Central (server-driven paging, fixed
online), 5,000 in Dataverse (`odata.maxpagesize`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from schemas.mappings import DATAVERSE_SETS, TableMapping
from schemas.odata_filter import matches, odata_text
from schemas.vocabulary import Side
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.store import couplings
from service.store.db import Database

REPORT_IDS = 1000  # ids listed per category in the report (all are counted)
MAX_CANDIDATES = 5  # records `candidates` returns at most
BC_PAGE = 20_000  # rows per page: Business Central's maximum (online it cannot be changed)
DATAVERSE_PAGE = 5_000  # Dataverse's maximum `odata.maxpagesize`


def key_value(value: Any) -> str | None:
    """A match key's value as text, None when the record has none (None or "")."""
    return None if value in (None, "") else str(value)


def bulk_key(value: Any) -> str | None:
    """A match key's value as the bulk matching compares it: trimmed, lower case; None when blank."""
    text = key_value(value)
    return (text.strip().lower() or None) if text is not None else None


class Matcher:
    def __init__(self, mapping: TableMapping, bc: BusinessCentralClient, dv: DataverseClient) -> None:
        self.mapping = mapping
        self.bc = bc
        self.dv = dv
        self.dataverse_set = DATAVERSE_SETS[mapping.dataverse_entity]
        self.dataverse_key = f"{mapping.dataverse_entity}id"

    def keys_toward(self, toward: Side | str) -> list[tuple[str, str]]:
        """Per match key, in the mapping's order: (the field read on a record of the other side, the column
        compared on `toward`)."""
        if toward == Side.BC:
            return [(dataverse_field, bc_field) for bc_field, dataverse_field in self.mapping.match_keys]
        return list(self.mapping.match_keys)

    def records(self, side: Side | str, filter_: str | None = None, *, select: list[str] | None = None,
                page_size: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every record of a side (streamed page by page), optionally only those matching `filter_`."""
        if side == Side.BC:
            return self.bc.list(self.mapping.bc_entity, api=self.mapping.bc_api, filter=filter_, select=select,
                                page_size=page_size or 1000)
        return self.dv.list(self.dataverse_set, filter=filter_, select=select, page_size=page_size or 1000)

    def listing(self, side: Side | str, *, select: list[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every record of a side by the largest pages the service allows."""
        return self.records(side, select=select, page_size=BC_PAGE if side == Side.BC else DATAVERSE_PAGE)

    def id_column(self, side: Side | str) -> str:
        return "id" if side == Side.BC else self.dataverse_key

    def record_id(self, side: Side | str, record: dict[str, Any]) -> str:
        return str(record["id"] if side == Side.BC else record[self.dataverse_key]).lower()

    # --- one record -------------------------------------------------------------------------------------------

    async def candidates(self, toward: Side | str, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Records on `toward` that are this record by the match keys: the first key with a value that finds
        any decides; at most MAX_CANDIDATES. Coupled or not: the caller tells which it may take."""
        for field, column in self.keys_toward(toward):
            value = key_value(record.get(field))
            if value is None:
                continue
            found = [r async for r in self.records(toward, f"{column} eq {odata_text(value)}")]
            if found:
                return found[:MAX_CANDIDATES]
        return []

    # --- all records ------------------------------------------------------------------------------------------

    async def couple_all(self, db: Database) -> dict[str, Any]:
        """Couple the uncoupled records both sides have by the match keys (a key value shared by more than one
        uncoupled Dataverse record is ambiguous); a report of what was coupled and what was not."""
        mapping = self.mapping
        coupled_bc: set[str] = set()
        coupled_dv: set[str] = set()
        after = 0
        while True:
            async with db.session() as session:
                page = await couplings.list_for(session, mapping.name, limit=1000, after_id=after)
            if not page:
                break
            after = page[-1].id or after
            coupled_bc.update(c.bc_id for c in page)
            coupled_dv.update(c.dataverse_id for c in page)
        bc_fields = [field for field, _ in self.keys_toward(Side.DATAVERSE)]
        dv_fields = [field for field, _ in self.keys_toward(Side.BC)]
        index: list[dict[str, list[str]]] = [{} for _ in mapping.match_keys]
        dv_left: set[str] = set()
        async for row in self.records(Side.DATAVERSE):
            record_id = self.record_id(Side.DATAVERSE, row)
            if record_id in coupled_dv or not matches(mapping.dataverse_filter, row):
                continue
            dv_left.add(record_id)
            for position, dv_field in enumerate(dv_fields):
                value = bulk_key(row.get(dv_field))
                if value:
                    index[position].setdefault(value, []).append(record_id)
        coupled, ambiguous, unmatched_bc = 0, [], []
        async for record in self.records(Side.BC):
            record_id = self.record_id(Side.BC, record)
            if record_id in coupled_bc or not matches(mapping.bc_filter, record):
                continue
            outcome = "unmatched"
            for position, bc_field in enumerate(bc_fields):
                value = bulk_key(record.get(bc_field))
                candidates = [c for c in index[position].get(value, []) if c in dv_left] if value else []
                if len(candidates) == 1:
                    async with db.session() as session:
                        await couplings.save(session, mapping.name, record_id, candidates[0],
                                             last_result="coupled by match")
                        await couplings.forget_decoupled(session, mapping.name, Side.BC, record_id)
                        await couplings.forget_decoupled(session, mapping.name, Side.DATAVERSE, candidates[0])
                    dv_left.discard(candidates[0])
                    coupled += 1
                    outcome = "coupled"
                    break
                if len(candidates) > 1:
                    outcome = "ambiguous"
                    break
            if outcome == "ambiguous":
                ambiguous.append(record_id)
            elif outcome == "unmatched":
                unmatched_bc.append(record_id)
        unmatched_dv = sorted(dv_left)
        return {
            "mapping": mapping.name, "coupled": coupled, "already_coupled": len(coupled_bc),
            "ambiguous": len(ambiguous), "unmatched_bc": len(unmatched_bc), "unmatched_dataverse": len(unmatched_dv),
            "ambiguous_bc_ids": ambiguous[:REPORT_IDS], "unmatched_bc_ids": unmatched_bc,
            "unmatched_dataverse_ids": unmatched_dv,
        }


class MatchIndex:
    """`Matcher.candidates` for the records of one side of a mapping, from the other side read once by pages
    (see the module docstring). Built on the first `candidates` call: a line whose records are all coupled
    reads nothing for it. Holds the source side's key values and the other side's records that share one."""

    def __init__(self, matcher: Matcher, source: Side | str) -> None:
        self.matcher = matcher
        self.source, self.toward = Side(source), Side(source).other
        self.keys = matcher.keys_toward(self.toward)  # (field of a source record, column of the other side)
        self._index: list[dict[str, list[dict[str, Any]]]] | None = None
        self._lock = asyncio.Lock()
        self.kept = 0  # other-side records held

    @property
    def mapping(self) -> TableMapping:
        return self.matcher.mapping

    def serves(self, mapping: TableMapping, toward: Side | str) -> bool:
        return mapping.name == self.mapping.name and Side(toward) == self.toward

    async def build(self) -> None:
        """Read the source side's key values, then the other side's records that have one of them."""
        source_id = self.matcher.id_column(self.source)
        wanted: list[set[str]] = [set() for _ in self.keys]
        fields = sorted({source_id, *(field for field, _ in self.keys)})
        async for row in self.matcher.listing(self.source, select=fields):
            for position, (field, _) in enumerate(self.keys):
                value = key_value(row.get(field))
                if value is not None:
                    wanted[position].add(value.lower())
        index: list[dict[str, list[dict[str, Any]]]] = [{} for _ in self.keys]
        kept = 0
        async for row in self.matcher.listing(self.toward):
            held = False
            for position, (_, column) in enumerate(self.keys):
                value = key_value(row.get(column))
                if value is None or (folded := value.lower()) not in wanted[position]:
                    continue
                found = index[position].setdefault(folded, [])
                if len(found) < MAX_CANDIDATES:
                    found.append(row)
                    held = True
            kept += held
        self._index, self.kept = index, kept

    @property
    def built(self) -> bool:
        return self._index is not None

    async def candidates(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """What `Matcher.candidates(toward, record)` would answer, without a request."""
        if self._index is None:
            async with self._lock:
                if self._index is None:
                    await self.build()
        assert self._index is not None
        for position, (field, _) in enumerate(self.keys):
            value = key_value(record.get(field))
            if value is None:
                continue
            found = self._index[position].get(value.lower())
            if found:
                return list(found)
        return []

    def add(self, record: dict[str, Any], other_id: str) -> None:
        """The other side's record created for `record` (source) during the line: found by its key values from
        now on, as the server would (coupled, so never taken as a match — but a key that finds it decides)."""
        if self._index is None:
            return  # not built: the listing will show it
        created = {self.matcher.id_column(self.toward): other_id}
        for position, (field, column) in enumerate(self.keys):
            value = key_value(record.get(field))
            if value is None:
                continue
            created[column] = value
            found = self._index[position].setdefault(value.lower(), [])
            if len(found) < MAX_CANDIDATES:
                found.append(created)


# The match index of the full synchronization line this task runs (consulted by `FieldValues.match`).
PREFETCHED: ContextVar[MatchIndex | None] = ContextVar("bcsync_prefetched_matches", default=None)


async def match_and_couple(mapping: TableMapping, bc: BusinessCentralClient, dv: DataverseClient,
                           db: Database) -> dict[str, Any]:
    """`Matcher(mapping, bc, dv).couple_all(db)` (the admin API's name for it)."""
    return await Matcher(mapping, bc, dv).couple_all(db)
