"""Answers of the table mapping routes (`/admin/mappings...`): a mapping as `schemas.mapping_config.describe`
shows it, with its hold state and version. The request body of `PATCH` is `schemas.mapping_config.MappingChanges`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from schemas.mappings import ConflictPolicy, DeletePolicy, Direction


class MappingField(BaseModel):
    """A field pair of the mapping, configured or not."""

    bc: str = Field(description="the Business Central API field")
    dataverse: str = Field(description="the Dataverse column")
    enabled: bool
    direction: Direction
    transform: str | None = Field(description="a conversion the sync engine applies, e.g. `lookup:SALESPEOPLE`")
    create_only: bool = Field(description="written when the destination record is created, never updated")
    sensitive: bool = Field(description="recorded as changed in the record history, never with its values")


class Mapping(BaseModel):
    """A mapping's effective settings (the defaults with the installation's changes)."""

    name: str
    bc_entity: str = Field(description="the Business Central API entity set")
    dataverse_entity: str = Field(description="the Dataverse table (logical name)")
    bc_api: str = Field(description='the BC API route, e.g. "v2.0"')
    direction: Direction
    supported_directions: list[Direction]
    depends_on: list[str] = Field(description="mappings whose records this one refers to")
    bc_filter: str | None = Field(description="OData $filter of the BC records that take part")
    dataverse_filter: str | None = Field(description="OData $filter of the Dataverse records that take part")
    only_coupled: bool = Field(description="synchronize only records already coupled")
    conflict_policy: ConflictPolicy
    delete_policy: DeletePolicy
    bc_template: dict[str, Any] = Field(description="values set on BC records the integration creates")
    dataverse_template: dict[str, Any] = Field(description="values set on Dataverse records the integration creates")
    match_keys: list[list[str]] = Field(description="(BC field, Dataverse column) pairs that match records, in order")
    reconcile_minutes: int | None = Field(description="minutes between catch-ups; null: BCSYNC_RECONCILE_MINUTES")
    fields: list[MappingField]
    on_hold: bool
    version: int = Field(description="grows with every accepted change")


class MappingVersion(BaseModel):
    version: int
    changed_at: datetime
    config: str = Field(description="the installation's changes as stored (JSON text)")


class MappingDetail(Mapping):
    history: list[MappingVersion] = Field(description="every accepted change, oldest first")


class HoldResult(BaseModel):
    mappings: list[str]
    on_hold: bool
    runs_in_flight: int = Field(description="runs still applying after the wait (0: nothing of them is applied)")
