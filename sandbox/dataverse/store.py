"""The rows of every table, in memory, and the organization-wide row version counter."""

from __future__ import annotations

from typing import Any

from sandbox.dataverse.schema import TABLES

Row = dict[str, Any]


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Row]] = {logical: {} for logical in TABLES}
        # Dataverse row versions are one increasing counter across the organization, not per row.
        self._version = 1_000_000

    def next_version(self) -> int:
        self._version += 1
        return self._version

    def get(self, logical: str, record_id: str) -> Row | None:
        return self.rows[logical].get(record_id)

    def all(self, logical: str) -> list[Row]:
        return list(self.rows[logical].values())

    def put(self, logical: str, row: Row) -> None:
        self.rows[logical][row[TABLES[logical].primary_id]] = row

    def remove(self, logical: str, record_id: str) -> None:
        self.rows[logical].pop(record_id, None)
