"""In-memory tables: rows by id in insertion order, weak ETags, number series, an undo journal.

Every write goes through `put`/`remove` so that ETags, lastModifiedDateTime, change events and
`$batch` rollback stay consistent. Change events are handed to `on_change` (the webhook notifier).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox.bc.clock import Clock, iso
from sandbox.bc.entities import ENTITIES, EntityDef

ChangeListener = Callable[[EntityDef, str, str, datetime], None]  # entity, id, changeType, time
# Secondary indexes: the contacts of a company contact (its own row and its persons) are looked up on every
# `customers(<id>)/contactsInformation` read.
GROUPED_BY = {"contacts": "companyNumber"}


@dataclass
class Row:
    data: dict[str, Any]
    seq: int  # insertion order: the paging cursor
    etag: str
    modified: datetime


def make_etag(row_id: str, version: int) -> str:
    """A weak ETag shaped like BC's: W/"<base64 of '<len>;<key>1;<rowversion>;'>"."""
    key = base64.b64encode(uuid.UUID(row_id).bytes).decode()
    inner = f"'{len(key)};{key}1;{version};'"
    return 'W/"' + base64.b64encode(inner.encode()).decode() + '"'


class Table:
    def __init__(self, entity: EntityDef) -> None:
        self.entity = entity
        self.rows: dict[str, Row] = {}
        self.by_unique: dict[str, str] = {}  # number/code → id
        self.group_field = GROUPED_BY.get(entity.name)
        self.groups: dict[str, dict[str, None]] = {}  # GROUPED_BY value (upper case) → ids, in insertion order

    def find_unique(self, value: str) -> Row | None:
        row_id = self.by_unique.get(value.upper())
        return self.rows.get(row_id) if row_id else None

    def group(self, value: str) -> list[Row]:
        """The rows whose GROUPED_BY field is `value` (case-insensitive, as BC's collation)."""
        ids = self.groups.get(value.upper(), {})
        return [self.rows[row_id] for row_id in ids if row_id in self.rows]


class Store:
    def __init__(self, clock: Clock, notification_time: str = "trigger") -> None:
        # Which time a change's notification carries (sandbox reading `notification_time`): "trigger" — BC's
        # codeunit 6153 "API Webhook Notification Mgt." RegisterNotification stamps CurrentDateTime() in the
        # database trigger ("Cannot use $systemModifiedAt as it is not updated yet in OnDatabaseModify"), so the
        # record's lastModifiedDateTime is later; "modified" — the same value (both rounded to one SQL datetime
        # tick of ~3 ms, the reading docs/echoes.md leaves open).
        self.notification_time = notification_time
        self.clock = clock
        self.tables = {name: Table(entity) for name, entity in ENTITIES.items()}
        self.counters: dict[str, int] = {}
        self.version = 1000
        self.seq = 0
        self.on_change: ChangeListener | None = None
        self.contact_links: dict[str, str] = {}  # customer id → its company contact's id
        self._journal: list[tuple[str, str, Row | None]] | None = None
        self._pending: list[tuple[EntityDef, str, str, datetime]] | None = None

    def table(self, name: str) -> Table:
        return self.tables[name]

    def next_number(self, prefix: str) -> str:
        # BC's default series step by 10: C00010, C00020, …
        table_next = self.counters.get(prefix, 0) + 10
        self.counters[prefix] = table_next
        return f"{prefix}{table_next:05d}"

    def put(self, name: str, data: dict[str, Any], change: str | None = "updated") -> Row:
        """Insert or replace the row `data["id"]`; new ETag and lastModifiedDateTime; emit `change`."""
        table = self.tables[name]
        old = table.rows.get(data["id"])
        self._log(name, data["id"], old)
        trigger = self.clock.stamp()
        now = self.clock.after(trigger) if self.notification_time == "trigger" else trigger
        self.version += 1
        if "lastModifiedDateTime" in table.entity.fields:
            data["lastModifiedDateTime"] = iso(now)
        if old is None:
            self.seq += 1
        row = Row(data, old.seq if old else self.seq, make_etag(data["id"], self.version), now)
        table.rows[data["id"]] = row
        self._reindex(table, old, row)
        if change:
            self.emit(table.entity, data["id"], "created" if old is None else change, trigger)
        return row

    def remove(self, name: str, row_id: str, notify: bool = True) -> None:
        table = self.tables[name]
        old = table.rows.pop(row_id)
        self._log(name, row_id, old)
        self._reindex(table, old, None)
        if notify:
            self.emit(table.entity, row_id, "deleted", self.clock.stamp())

    @staticmethod
    def _reindex(table: Table, old: Row | None, new: Row | None) -> None:
        key, group = table.entity.unique, table.group_field
        if old is not None:
            if key:
                table.by_unique.pop(str(old.data.get(key, "")).upper(), None)
            if group:
                table.groups.get(str(old.data.get(group, "")).upper(), {}).pop(old.data["id"], None)
        if new is not None:
            if key and new.data.get(key):
                table.by_unique[str(new.data[key]).upper()] = new.data["id"]
            if group and new.data.get(group):
                table.groups.setdefault(str(new.data[group]).upper(), {})[new.data["id"]] = None

    def link_contact(self, customer_id: str, contact_id: str) -> None:
        self.contact_links[customer_id] = contact_id

    def unlink_contact(self, customer_id: str) -> None:
        self.contact_links.pop(customer_id, None)

    def emit(self, entity: EntityDef, row_id: str, change: str, when: datetime) -> None:
        if self._pending is not None:
            self._pending.append((entity, row_id, change, when))
        elif self.on_change:
            self.on_change(entity, row_id, change, when)

    def _log(self, name: str, row_id: str, old: Row | None) -> None:
        if self._journal is not None:
            self._journal.append((name, row_id, old))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: on an exception, undo every write since the start; events only on success."""
        if self._journal is not None:  # nested: the outer transaction decides
            yield
            return
        self._journal, self._pending = [], []
        journal, pending = self._journal, self._pending
        try:
            yield
        except BaseException:
            self._journal = self._pending = None
            touched: set[str] = set()
            for name, row_id, old in reversed(journal):
                touched.add(name)
                table = self.tables[name]
                current = table.rows.pop(row_id, None)
                if current is not None:
                    self._reindex(table, current, None)
                if old is not None:
                    table.rows[row_id] = old
                    self._reindex(table, None, old)
            for name in touched:  # restored rows went to the end: put them back in paging order
                table = self.tables[name]
                table.rows = dict(sorted(table.rows.items(), key=lambda item: item[1].seq))
            raise
        self._journal = self._pending = None
        for event in _merge(pending):
            if self.on_change:
                self.on_change(*event)

    def reset(self) -> None:
        for table in self.tables.values():
            table.rows.clear()
            table.by_unique.clear()
            table.groups.clear()
        self.counters.clear()
        self.contact_links.clear()


Event = tuple[EntityDef, str, str, datetime]


def _merge(events: list[Event]) -> list[Event]:
    """One request is one change per record: created+updated → created, anything+deleted → deleted."""
    merged: dict[tuple[str, str], Event] = {}
    for entity, row_id, change, when in events:
        key = (entity.name, row_id)
        first = merged.get(key)
        if first is not None and change != "deleted":
            change = first[2]
        merged.pop(key, None)
        merged[key] = (entity, row_id, change, when)
    return list(merged.values())
