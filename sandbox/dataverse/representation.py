"""Rows as the Web API returns them, and request bodies turned into column values (`@odata.bind`)."""

from __future__ import annotations

import re
from typing import Any

from sandbox.dataverse import errors, navigation
from sandbox.dataverse.schema import BY_SET, LOOKUP, SYSTEM_COLUMNS, TABLES, Table
from sandbox.dataverse.store import Row, Store
from sandbox.dataverse.values import EntityRef, from_web, normalize_guid, to_web

# Never readable through the Web API (IsValidForRead false).
UNREADABLE = {"authvalue"}
_BIND = re.compile(r"^(?:.*/)?([A-Za-z_]\w*)\(([0-9a-fA-F-]{36})\)$")


def etag(row: Row) -> str:
    return f'W/"{row["versionnumber"]}"'


def to_json(table: Table, row: Row, select: list[str] | None, store: Store, annotations: bool,
            nav_style: str = navigation.LOWER) -> dict[str, Any]:
    out: dict[str, Any] = {"@odata.etag": etag(row)}
    names = select if select is not None else [
        *(c for c in table.columns if c not in UNREADABLE), *(f"_{lk}_value" for lk in table.lookups)]
    for name in names:
        if name in UNREADABLE:
            out[name] = None
        elif name.startswith("_") and name.endswith("_value"):
            column = name[1:-6]
            ref = row.get(column)
            out[name] = ref.id if isinstance(ref, EntityRef) else None
            if annotations and isinstance(ref, EntityRef):
                target = TABLES.get(ref.logical)
                target_row = store.get(ref.logical, ref.id) if target else None
                out[f"{name}@OData.Community.Display.V1.FormattedValue"] = (
                    target_row.get(target.primary_name) if target_row and target else None)
                out[f"{name}@Microsoft.Dynamics.CRM.associatednavigationproperty"] = (
                    navigation.nav_name(table, column, ref.logical, nav_style)
                    if ref.logical in table.lookups[column].navs else column)
                out[f"{name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = ref.logical
        else:
            out[name] = to_web(table.columns[name], row.get(name))
    # The primary key is always returned, even when $select leaves it out.
    out.setdefault(table.primary_id, row[table.primary_id])
    return out


def parse_body(table: Table, body: Any, store: Store, nav_style: str = navigation.LOWER) -> Row:
    """A create/update body as column values; unknown columns and wrong types fail with 400."""
    if not isinstance(body, dict):
        raise errors.DataverseError(400, errors.BAD_PAYLOAD, "The request body must be a JSON object.")
    attrs: Row = {}
    for key, value in body.items():
        if "@" in key:
            name, _, annotation = key.partition("@")
            if annotation != "odata.bind":
                continue  # other instance annotations (@odata.type, @odata.etag) are ignored on write
            if not name:
                continue
            attrs.update(_bind(table, name, value, store, nav_style))
            continue
        kind = table.column_type(key)
        if kind is None or kind == LOOKUP:
            if kind == LOOKUP:
                raise errors.DataverseError(
                    400, errors.BAD_PAYLOAD,
                    f"An undeclared property '{key}' which only has property annotations in the payload but no "
                    f"property value was found in the payload. A lookup is written as "
                    f"'<navigation>@odata.bind'.")
            if isinstance(value, dict | list):
                raise errors.DataverseError(400, errors.BAD_PAYLOAD,
                                            f"Deep insert of '{key}' is not supported by the sandbox.")
            raise errors.unknown_property(table.logical, key)
        if key in SYSTEM_COLUMNS or key in table.read_only:
            continue  # read-only columns are ignored on write, as Dataverse does
        attrs[key] = from_web(table.logical, key, kind, value)
    return attrs


def _bind(table: Table, nav: str, value: Any, store: Store, nav_style: str) -> Row:
    found = navigation.find(table, nav, nav_style)
    if found is None:
        raise errors.undeclared_property(table.entity_set, nav)
    column, targets = found
    if value is None:
        return {column: None}
    match = _BIND.match(value) if isinstance(value, str) else None
    if not match or match.group(1) not in BY_SET:
        raise errors.DataverseError(400, errors.BAD_PAYLOAD,
                                    f"Invalid reference '{value}' for navigation property '{nav}'.")
    bound = BY_SET[match.group(1)]
    if bound.logical not in targets:
        raise errors.DataverseError(
            400, errors.BAD_PAYLOAD,
            f"Navigation property '{nav}' of '{table.logical}' cannot reference a '{bound.logical}'.")
    record_id = normalize_guid(match.group(2))
    if store.get(bound.logical, record_id) is None:
        raise errors.not_found(bound.logical, record_id)
    return {column: EntityRef(bound.logical, record_id)}
