"""What an operator may change in a mapping, how it is checked, and how it is applied to the defaults.

The defaults live in `schemas/mappings.py`; an installation's changes are stored as a small JSON object per
mapping (validated by `MappingChanges`) and laid over the defaults by `effective`.
"""

from __future__ import annotations

import dataclasses
from graphlib import CycleError, TopologicalSorter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.mappings import BY_NAME, MAPPINGS, ConflictPolicy, DeletePolicy, Direction, FieldMap, TableMapping
from schemas.odata_filter import FilterError, validate

# Directions each mapping can support: it cannot create what the other system cannot receive
# (Sales users are not created from BC salespeople; BC has no API to create currencies from Sales, …).
SUPPORTED: dict[str, frozenset[Direction]] = {
    "SALESPEOPLE": frozenset({Direction.FROM_CRM}),
    "CURRENCY": frozenset({Direction.TO_CRM}),
    "UNITOFMEASURE": frozenset({Direction.TO_CRM}),
    "CUSTOMER": frozenset(Direction),
    "CONTACT": frozenset(Direction),
    "ITEM-PRODUCT": frozenset({Direction.TO_CRM}),
    "RESOURCE-PRODUCT": frozenset({Direction.TO_CRM}),
    "CUSTPRCGRP-PRICE": frozenset({Direction.TO_CRM}),
    "SALESPRC-PRODPRICE": frozenset({Direction.TO_CRM}),
    "SALESORDER-ORDER": frozenset({Direction.FROM_CRM}),
    "POSTEDSALESINV-INV": frozenset({Direction.TO_CRM}),
}


class FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bc: str = Field(min_length=1, max_length=100)
    dataverse: str = Field(min_length=1, max_length=100)
    enabled: bool | None = None
    direction: Direction | None = None
    # Recorded as changed in the record history, never with its values (e.g. a bank account, a personal number).
    sensitive: bool | None = None


class MappingChanges(BaseModel):
    """The body of `PATCH /admin/mappings/{name}`; every member optional."""

    model_config = ConfigDict(extra="forbid")

    direction: Direction | None = None
    bc_filter: str | None = Field(default=None, max_length=2000)
    dataverse_filter: str | None = Field(default=None, max_length=2000)
    only_coupled: bool | None = None
    conflict_policy: ConflictPolicy | None = None
    delete_policy: DeletePolicy | None = None
    bc_template: dict[str, Any] | None = None
    dataverse_template: dict[str, Any] | None = None
    depends_on: list[str] | None = None
    reconcile_minutes: int | None = Field(default=None, ge=0, le=7 * 24 * 60)
    fields: list[FieldChange] | None = Field(default=None, max_length=100)


def problems(name: str, changes: MappingChanges, stored: dict[str, Any] | None = None) -> list[str]:
    """Why these changes (on top of what is stored) cannot be accepted; empty when they can."""
    found: list[str] = []
    mapping = BY_NAME[name]
    if changes.direction is not None and changes.direction not in SUPPORTED[name]:
        allowed = ", ".join(sorted(d.value for d in SUPPORTED[name]))
        found.append(f"{name} cannot synchronize {changes.direction.value}; it supports: {allowed}")
    for label, text in (("bc_filter", changes.bc_filter), ("dataverse_filter", changes.dataverse_filter)):
        if text:
            try:
                validate(text)
            except FilterError as exc:
                found.append(f"{label}: {exc}")
    known = {(f.bc, f.dataverse) for f in mapping.fields}
    for field in changes.fields or []:
        if (field.bc, field.dataverse) not in known:
            found.append(f"{name} has no field pair {field.bc} / {field.dataverse}")
    if changes.depends_on is not None:
        unknown = [d for d in changes.depends_on if d not in BY_NAME or d == name]
        if unknown:
            found.append(f"unknown or self dependencies: {', '.join(unknown)}")
        else:
            graph = {m.name: set(m.depends_on) for m in MAPPINGS}
            graph[name] = set(changes.depends_on)
            try:
                tuple(TopologicalSorter(graph).static_order())
            except CycleError as exc:
                found.append(f"dependency cycle: {' → '.join(exc.args[1])}")
    return found


def merge(stored: dict[str, Any], changes: MappingChanges) -> dict[str, Any]:
    """The stored changes with new ones laid over (field changes merge per field pair)."""
    merged = dict(stored)
    for key, value in changes.model_dump(exclude_none=True, mode="json").items():
        if key == "fields":
            by_pair = {(f["bc"], f["dataverse"]): f for f in merged.get("fields", [])}
            for field in value:
                by_pair[(field["bc"], field["dataverse"])] = {**by_pair.get((field["bc"], field["dataverse"]), {}),
                                                             **field}
            merged["fields"] = list(by_pair.values())
        else:
            merged[key] = value
    return merged


def effective(mapping: TableMapping, stored: dict[str, Any]) -> TableMapping:
    """The mapping with an installation's stored changes applied."""
    if not stored:
        return mapping
    simple: dict[str, Any] = {k: stored[k] for k in ("bc_filter", "dataverse_filter", "only_coupled") if k in stored}
    if "direction" in stored:
        simple["direction"] = Direction(stored["direction"])
    if "conflict_policy" in stored:
        simple["conflict_policy"] = ConflictPolicy(stored["conflict_policy"])
    if "delete_policy" in stored:
        simple["delete_policy"] = DeletePolicy(stored["delete_policy"])
    for side in ("bc_template", "dataverse_template"):
        if side in stored:
            simple[side] = tuple(stored[side].items())
    if "depends_on" in stored:
        simple["depends_on"] = tuple(stored["depends_on"])
    overrides = {(f["bc"], f["dataverse"]): f for f in stored.get("fields", [])}
    fields = []
    for field in mapping.fields:
        change = overrides.get((field.bc, field.dataverse), {})
        if change.get("enabled") is False:
            continue
        fields.append(_field_with(field, change))
    return dataclasses.replace(mapping, fields=tuple(fields), **simple)


def _field_with(field: FieldMap, change: dict[str, Any]) -> FieldMap:
    """A field pair with an operator's stored change (direction, sensitive) applied."""
    if change.get("direction"):
        field = dataclasses.replace(field, direction=Direction(change["direction"]))
    if change.get("sensitive") is not None:
        field = dataclasses.replace(field, sensitive=bool(change["sensitive"]))
    return field


def describe(mapping: TableMapping, stored: dict[str, Any]) -> dict[str, Any]:
    """A mapping as the admin API shows it: effective settings, and every field with its state."""
    current = effective(mapping, stored)
    enabled = {(f.bc, f.dataverse): f for f in current.fields}
    overrides = {(f["bc"], f["dataverse"]): f for f in stored.get("fields", [])}

    def field(f: FieldMap) -> dict[str, Any]:
        now = enabled.get((f.bc, f.dataverse))
        configured = now or _field_with(f, overrides.get((f.bc, f.dataverse), {}))  # a disabled one too
        return {"bc": f.bc, "dataverse": f.dataverse, "enabled": now is not None,
                "direction": (now or f).direction.value, "transform": f.transform, "create_only": f.create_only,
                "sensitive": configured.sensitive}

    return {
        "name": current.name, "bc_entity": current.bc_entity, "dataverse_entity": current.dataverse_entity,
        "bc_api": current.bc_api, "direction": current.direction.value,
        "supported_directions": sorted(d.value for d in SUPPORTED[current.name]),
        "depends_on": list(current.depends_on), "bc_filter": current.bc_filter,
        "dataverse_filter": current.dataverse_filter, "only_coupled": current.only_coupled,
        "conflict_policy": current.conflict_policy.value, "delete_policy": current.delete_policy.value,
        "bc_template": dict(current.bc_template), "dataverse_template": dict(current.dataverse_template),
        "match_keys": [list(k) for k in current.match_keys], "reconcile_minutes": stored.get("reconcile_minutes"),
        "fields": [field(f) for f in mapping.fields],
    }
