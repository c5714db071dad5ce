"""The fault suite's shared fixture: every case records its row; at the end of the session the rows are
merged into docs/reliability.json and docs/reliability.md is rewritten (tests/faults/report.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.faults import report
from tests.faults.scenario import Row


@pytest.fixture(scope="session")
def fault_rows() -> Iterator[dict[int, Row]]:
    """Each case puts its row here *before* asserting on it, so a failing case shows its figures too."""
    rows: dict[int, Row] = {}
    started = time.monotonic()
    yield rows
    if rows:
        report.store([r.json() for r in rows.values()], time.monotonic() - started)
