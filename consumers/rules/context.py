"""What every rule needs to reach: both systems, the store, and the engine (for dependencies)."""

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


@dataclass
class SyncContext:
    bc: BusinessCentralClient
    dv: DataverseClient
    db: Database
    local_currency: str
    sync_dependency: DependencySync
    cache: dict[str, Any] = field(default_factory=dict)  # per-process lookups that do not change (base currency)


def odata_text(value: str) -> str:
    """A string literal for an OData $filter."""
    return "'" + value.replace("'", "''") + "'"
