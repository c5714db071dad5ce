"""Table definitions through the Web API ("Query table definitions using the Web API"):

- `EntityDefinitions` (`$select`, `$filter`) and `EntityDefinitions(LogicalName='<table>')` (or its MetadataId);
- `.../ManyToOneRelationships` ("can be queried just like the Attributes collection"): `$select`, `$filter`;
- `.../Attributes`: `$select`, `$filter`;
- `.../Attributes/Microsoft.Dynamics.CRM.<Type>AttributeMetadata` ("you must cast the Attributes
  collection-valued navigation property to the type you want"), with `$expand=OptionSet($select=Options)`
  for Picklist, State, Status and Boolean attributes.
Requests are authenticated and budgeted like every Web API call (webapi.py runs this behind the same checks).
MetadataId is always returned, whatever `$select` says.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from sandbox.dataverse import attributes, errors, metafilter, navigation
from sandbox.dataverse.schema import TABLES, Table
from sandbox.dataverse.values import metadata_id

_PATH = re.compile(r"^EntityDefinitions(?:\((?:LogicalName='(?P<name>[^']*)'|(?P<id>[0-9a-fA-F-]{36}))\))?"
                   r"(?:/(?P<nav>ManyToOneRelationships|Attributes)(?:/Microsoft\.Dynamics\.CRM\.(?P<cast>\w+))?)?$")
_EXPAND_ITEM = re.compile(r"^(\w+)(?:\(\$select=([\w,]*)\))?$")
ENTITY_PROPERTIES = ("LogicalName", "EntitySetName", "LogicalCollectionName", "PrimaryIdAttribute",
                     "PrimaryNameAttribute", "IsActivity", "MetadataId")
RELATIONSHIP_PROPERTIES = ("SchemaName", "ReferencedEntity", "ReferencedAttribute", "ReferencingEntity",
                           "ReferencingAttribute", "ReferencingEntityNavigationPropertyName",
                           "ReferencedEntityNavigationPropertyName", "RelationshipType", "IsCustomRelationship",
                           "MetadataId")
ODATA = {"OData-Version": "4.0"}


def entity(table: Table) -> dict[str, Any]:
    return {"LogicalName": table.logical, "EntitySetName": table.entity_set,
            "LogicalCollectionName": table.entity_set, "PrimaryIdAttribute": table.primary_id,
            "PrimaryNameAttribute": table.primary_name, "IsActivity": table.id_column == "activityid",
            "MetadataId": metadata_id("entity", table.logical)}


def respond(request: Request, path: str, nav_style: str) -> Response:
    if request.method != "GET":
        raise errors.DataverseError(405, errors.BAD_QUERY, f"{request.method} is not supported on table definitions.")
    match = _PATH.match(path)
    if match is None:
        raise errors.DataverseError(404, errors.BAD_QUERY, f"Resource not found for the segment '{path}'.")
    params = request.query_params
    root = str(request.base_url).rstrip("/") + "/api/data/v9.2/$metadata#EntityDefinitions"
    if match.group("name") is None and match.group("id") is None:
        if match.group("nav"):
            raise errors.bad_query("A table definition must be addressed by its key.")
        rows = [entity(t) for t in TABLES.values()]
        return JSONResponse(_collection(rows, params, ENTITY_PROPERTIES, "EntityMetadata", root), headers=ODATA)
    table = _table(match.group("name"), match.group("id"))
    if match.group("nav") is None:
        select = _select(params.get("$select"), ENTITY_PROPERTIES, "EntityMetadata")
        body = _pick(entity(table), select)
        suffix = f"({','.join(select)})" if select else ""
        return JSONResponse({"@odata.context": f"{root}{suffix}/$entity", **body}, headers=ODATA)
    root = f"{root}('{table.logical}')/{match.group('nav')}"
    if match.group("nav") == "ManyToOneRelationships":
        if match.group("cast"):
            raise _no_segment(match.group("cast"))
        rows = navigation.many_to_one(table, nav_style)
        body = _collection(rows, params, RELATIONSHIP_PROPERTIES, "OneToManyRelationshipMetadata", root)
        return JSONResponse(body, headers=ODATA)
    return _attributes(table, match.group("cast"), params, root)


def _table(name: str | None, key: str | None) -> Table:
    for table in TABLES.values():
        if table.logical == name or (key is not None and metadata_id("entity", table.logical) == key.lower()):
            return table
    # The SDK's message for a table the org lacks (ErrorCode 0x80041102; MscrmTools/MscrmTools.PortalCodeEditor#15).
    raise errors.DataverseError(404, "0x80041102", f"The entity with a name = '{name or key}' with namemapping = "
                                                   f"'Logical' was not found in the MetadataCache.")


def _no_segment(cast: str) -> errors.DataverseError:
    return errors.DataverseError(404, errors.BAD_QUERY,
                                 f"Resource not found for the segment 'Microsoft.Dynamics.CRM.{cast}'.")


def _attributes(table: Table, cast: str | None, params: Any, root: str) -> Response:
    rows = [attributes.attribute(table, c) for c in attributes.columns(table)]
    properties: tuple[str, ...] = attributes.PROPERTIES
    type_name = "AttributeMetadata"
    if cast is not None:
        if cast not in attributes.METADATA_TYPES.values():
            raise _no_segment(cast)
        rows = [{k: v for k, v in r.items() if k != "@odata.type"} for r in rows
                if r["@odata.type"] == f"#Microsoft.Dynamics.CRM.{cast}"]
        type_name, root = cast, f"{root}/Microsoft.Dynamics.CRM.{cast}"
        if cast == "LookupAttributeMetadata":
            properties = (*properties, "Targets")
    expand = _expand(params.get("$expand"), type_name)
    for row in rows:
        for name, inner in expand.items():
            option_set = attributes.option_set(table, row["LogicalName"]) if name == "OptionSet" else None
            row[name] = _pick(option_set, inner) if option_set is not None else None  # local sets only
    return JSONResponse(_collection(rows, params, properties, type_name, root, tuple(expand)), headers=ODATA)


def _expand(text: str | None, type_name: str) -> dict[str, list[str] | None]:
    """`OptionSet($select=Options),GlobalOptionSet` → {"OptionSet": ["Options"], "GlobalOptionSet": None}."""
    out: dict[str, list[str] | None] = {}
    for item in re.split(r",(?![^()]*\))", text or ""):
        if not item.strip():
            continue
        found = _EXPAND_ITEM.match(item.strip())
        if found is None:
            raise errors.bad_query(f"Syntax error in $expand '{text}'.")
        if type_name not in attributes.OPTION_SET_TYPES or found.group(1) not in ("OptionSet", "GlobalOptionSet"):
            raise errors.no_property_of(type_name, found.group(1))
        inner = found.group(2)
        out[found.group(1)] = [p for p in inner.split(",") if p] if inner is not None else None
    return out


def _select(text: str | None, properties: tuple[str, ...], type_name: str) -> list[str] | None:
    if not text:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    for name in names:
        if name not in properties:
            raise errors.no_property_of(type_name, name)
    return names


def _pick(row: dict[str, Any], select: list[str] | None, expanded: tuple[str, ...] = ()) -> dict[str, Any]:
    if select is None:
        return row
    keep = {*select, *expanded, "MetadataId", "@odata.type"}
    return {k: v for k, v in row.items() if k in keep}


def _collection(rows: list[dict[str, Any]], params: Any, properties: tuple[str, ...], type_name: str,
                root: str, expanded: tuple[str, ...] = ()) -> dict[str, Any]:
    """The rows that pass `$filter`, cut to `$select` (expanded navigation properties stay)."""
    select = _select(params.get("$select"), properties, type_name)
    predicate = metafilter.parse(params.get("$filter"), properties, type_name)
    suffix = f"({','.join([*(select or []), *(f'{n}()' for n in expanded)])})" if select or expanded else ""
    return {"@odata.context": root + suffix, "value": [_pick(r, select, expanded) for r in rows if predicate(r)]}
