"""What every rule needs to reach: both systems, the store, settings, and the engine (for dependencies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.store.db import Database

# (mapping, side of the known record, its id) → the coupled record's id on the other side, or None when
# the record does not take part (excluded by the mapping's filter). Raises MissingDependency.
DependencySync = Callable[[str, str, str], Awaitable[str | None]]


async def _no_engine(mapping: str, side: str, record_id: str) -> str | None:
    raise RuntimeError("this SyncContext belongs to no SyncEngine: build rules through SyncEngine(ctx)")


@dataclass
class SyncContext:
    bc: BusinessCentralClient
    dv: DataverseClient
    db: Database
    local_currency: str
    sync_dependency: DependencySync = _no_engine  # set by the SyncEngine the rules are built for
    order_number_column: str | None = None  # BCSYNC_ORDER_NUMBER_COLUMN: the Sales column for BC's order number
    cache: dict[str, Any] = field(default_factory=dict)  # per-process lookups that do not change (base currency)
