"""The setup check: the mappings held against both systems' live metadata, before anything is written.

Every tenant is customized and localized differently, so the default field names of schemas/mappings.py are
checked where they are used:
- Business Central, per API route the mappings use (`v2.0`, the custom `bcsync/integration/v1.0`): is the
  route installed (a route that is not answers 404, "No HTTP resource was found …"); its `$metadata`: which
  entity sets and fields exist, which are read-only, an enum field's members (schemas/bc_metadata.py); and
  which resources BC can notify (`webhookSupportedResources`): the others are polled.
- Dataverse, per table: its columns (`EntityDefinitions(LogicalName=…)/Attributes`: exists, writable on
  create or update), its choice values, and the navigation property of every lookup the mapping writes.

A problem keeps the mapping from running (setup stores why, and the report says what to change); a warning
does not (metadata that could not be read, so nothing was checked against it). The check reads only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.bc_metadata import EntitySets, FieldShape, MetadataError, decode_name, parse
from schemas.mappings import BY_NAME, CUSTOM_API, OPTION_MAPS, Direction, FieldMap, TableMapping
from schemas.odata_filter import FilterError, comparisons
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.http import ApiError, NotFound
from service.connectors.navigation import UnknownLookup
from service.logging import get_logger

log = get_logger(__name__)

TOWARD_BC = (Direction.FROM_CRM, Direction.BOTH)
TOWARD_DATAVERSE = (Direction.TO_CRM, Direction.BOTH)
# The table a lookup transform binds to, besides `lookup:<MAPPING>` (that mapping's table).
TRANSFORM_TARGETS = {"parent": "account", "unit:product": "uom"}
EXTENSION_HINT = "install the bcsync extension (deploy/bc-extension) in Business Central and run setup again"


@dataclass
class MappingFindings:
    name: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bc_delivery: str = "push"  # push | poll | none (BC's changes are not needed)

    @property
    def available(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str | None:
        return "; ".join(self.problems) if self.problems else None

    def json(self) -> dict[str, Any]:
        return {"mapping": self.name, "available": self.available, "bc_delivery": self.bc_delivery,
                "problems": self.problems, "warnings": self.warnings}


@dataclass
class BcRoute:
    installed: bool | None  # None: could not tell
    sets: EntitySets | None  # None: the metadata could not be read
    note: str | None = None


@dataclass
class DataverseTable:
    exists: bool | None  # None: could not tell
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None


@dataclass
class CheckReport:
    mappings: dict[str, MappingFindings]
    warnings: list[str]
    bc_routes: dict[str, str]
    webhook_resources: list[str] | None

    def json(self) -> dict[str, Any]:
        return {"ok": all(m.available for m in self.mappings.values()),
                "unavailable": {n: m.reason for n, m in self.mappings.items() if not m.available},
                "mappings": [m.json() for m in self.mappings.values()], "warnings": self.warnings,
                "bc_routes": self.bc_routes, "webhook_resources": self.webhook_resources}


async def check(bc: BusinessCentralClient, dv: DataverseClient, mappings: list[TableMapping]) -> CheckReport:
    """Every mapping of `mappings` (as configured) against the live metadata of both systems."""
    routes = {api: await _bc_route(bc, api, [m.bc_entity for m in mappings if m.bc_api == api])
              for api in dict.fromkeys(m.bc_api for m in mappings)}
    warnings = [note for note in (r.note for r in routes.values()) if note]
    supported = await _webhook_resources(bc)
    if supported is None:
        warnings.append("Business Central did not say which resources it can notify (webhookSupportedResources): "
                        "every BC side is subscribed, and one whose subscription is refused is polled")
    tables: dict[str, DataverseTable] = {}
    for table in dict.fromkeys(t for m in mappings for t in _dataverse_tables(m)):
        tables[table] = await _dataverse_table(dv, table)
        if tables[table].note:
            warnings.append(str(tables[table].note))
    found = {}
    for mapping in mappings:
        findings = MappingFindings(mapping.name)
        _check_bc(mapping, routes[mapping.bc_api], findings)
        await _check_dataverse(dv, mapping, tables, findings)
        findings.bc_delivery = delivery(mapping, supported)
        found[mapping.name] = findings
    for mapping in mappings:
        missing = [d for d in mapping.depends_on if d in found and not found[d].available]
        if missing:
            found[mapping.name].warnings.append(
                f"depends on {', '.join(missing)}, which cannot run: records that need it wait for it")
    report = CheckReport(found, warnings, {api: _route_state(r) for api, r in routes.items()}, supported)
    log.info("setup check", unavailable=sorted(n for n, m in found.items() if not m.available),
             warnings=len(warnings))
    return report


def delivery(mapping: TableMapping, supported: list[str] | None) -> str:
    """push when BC can notify every BC table of the mapping (or cannot say), poll otherwise; none when the
    mapping needs no BC changes."""
    if not mapping.bc_is_source:
        return "none"
    if supported is None:
        return "push"
    listed = {s.strip().strip("/").lower() for s in supported}
    return "push" if all(f"{mapping.bc_api}/{e}".lower() in listed for e in mapping.bc_entities) else "poll"


# ---- Business Central -----------------------------------------------------------------------------------------

async def _bc_route(bc: BusinessCentralClient, api: str, entity_sets: list[str]) -> BcRoute:
    try:
        document = await bc.metadata(api)
    except NotFound:
        return await _probe_route(bc, api, entity_sets)
    except ApiError as exc:
        return BcRoute(None, None, f"Business Central api/{api}/$metadata could not be read ({exc.status} "
                                   f"{exc.code}): its fields were not checked")
    try:
        return BcRoute(True, parse(document))
    except MetadataError as exc:
        return BcRoute(True, None, f"Business Central api/{api}/$metadata could not be read ({exc}): its fields "
                                   "were not checked")


async def _probe_route(bc: BusinessCentralClient, api: str, entity_sets: list[str]) -> BcRoute:
    """No `$metadata` at the route: is the route missing, or only its metadata document?"""
    try:
        async for _ in bc.list(entity_sets[0], api=api, page_size=1):
            break
    except NotFound:
        return BcRoute(False, None)
    except ApiError as exc:
        return BcRoute(None, None, f"Business Central api/{api} could not be reached ({exc.status} {exc.code})")
    return BcRoute(True, None, f"Business Central serves no api/{api}/$metadata: its fields were not checked")


async def _webhook_resources(bc: BusinessCentralClient) -> list[str] | None:
    try:
        return await bc.webhook_supported_resources()
    except ApiError as exc:
        log.warning("webhookSupportedResources unreadable", status=exc.status, error=exc.message[:200])
        return None


def _route_state(route: BcRoute) -> str:
    return {True: "installed", False: "not installed", None: "unknown"}[route.installed]


def _check_bc(mapping: TableMapping, route: BcRoute, findings: MappingFindings) -> None:
    api = mapping.bc_api
    if route.installed is False:
        what = "the bcsync integration API" if api == CUSTOM_API else "the API"
        findings.problems.append(f"{what} api/{api} is not installed in Business Central"
                                 + (f": {EXTENSION_HINT}" if api == CUSTOM_API else ""))
        return
    if route.sets is None:
        return
    for entity_set in mapping.bc_entities:
        if entity_set not in route.sets:
            findings.problems.append(f"Business Central api/{api} has no entity set {entity_set}")
    shape = route.sets.get(mapping.bc_entity)
    if shape is None:
        return
    where = f"Business Central {mapping.bc_entity}"
    for field_map in mapping.fields:
        known = shape.get(field_map.bc)
        if known is None:
            findings.problems.append(f"{where} has no field {field_map.bc} (mapped to {field_map.dataverse}): "
                                     f"{_switch_off(mapping, field_map)}")
        elif known.read_only and field_map.direction in TOWARD_BC:
            findings.problems.append(f"{where}.{field_map.bc} is read-only, but the field pair writes it "
                                     f"({field_map.direction.value}): {_switch_off(mapping, field_map)}")
    for name, _, literal in _filter_comparisons(mapping.bc_filter, findings, "bc_filter"):
        if name not in shape:
            findings.problems.append(f"{where} has no field {name}, which the mapping's bc_filter compares")
        elif isinstance(literal, str):  # an option compared with a value it does not have excludes everything
            _check_bc_value(where, shape[name], name, literal, "bc_filter", findings)
    for field_map in mapping.fields:
        kind, _, name = (field_map.transform or "").partition(":")
        members = shape[field_map.bc].members if field_map.bc in shape else None
        if kind == "option" and members is not None:
            unknown = sorted(set(OPTION_MAPS[name]) - {m.strip() for m in members})
            if unknown:
                findings.warnings.append(f"{where}.{field_map.bc} has no option {', '.join(map(repr, unknown))} "
                                         f"of the {field_map.bc} → {field_map.dataverse} values")
    for name, value in mapping.bc_template:
        _check_bc_value(where, shape.get(name), name, value, "bc_template", findings)
    for bc_field, _ in mapping.match_keys:
        if bc_field not in shape:
            findings.problems.append(f"{where} has no field {bc_field}, a match key of the mapping")


def _check_bc_value(where: str, shape: FieldShape | None, name: str, value: object, what: str,
                    findings: MappingFindings) -> None:
    if shape is None:
        findings.problems.append(f"{where} has no field {name}, which the mapping's {what} uses")
    elif shape.members is not None and decode_name(str(value)).strip().lower() not in {
            m.strip().lower() for m in shape.members}:
        findings.problems.append(f"{where}.{name} has no option {value!r} (its options: "
                                 f"{', '.join(repr(m) for m in shape.members)}), which the mapping's {what} uses")


# ---- Dataverse ------------------------------------------------------------------------------------------------

def _dataverse_tables(mapping: TableMapping) -> list[str]:
    return list(dict.fromkeys([*mapping.dataverse_entities, *(t for t, _, _ in mapping.extra_binds)]))


async def _dataverse_table(dv: DataverseClient, table: str) -> DataverseTable:
    try:
        rows = await dv.attributes(table)
    except NotFound:
        return DataverseTable(False)
    except ApiError as exc:
        return DataverseTable(None, note=f"Dynamics 365 Sales metadata of {table} could not be read ({exc.status} "
                                         f"{exc.code}): its columns were not checked")
    return DataverseTable(True, {str(r.get("LogicalName")): r for r in rows})


def _lookup_target(field_map: FieldMap) -> str | None:
    transform = field_map.transform or ""
    if transform.startswith("lookup:"):
        return BY_NAME[transform.partition(":")[2]].dataverse_entity
    return TRANSFORM_TARGETS.get(transform)


async def _check_dataverse(dv: DataverseClient, mapping: TableMapping, tables: dict[str, DataverseTable],
                           findings: MappingFindings) -> None:
    table_name = mapping.dataverse_entity
    table = tables[table_name]
    if table.exists is False:
        findings.problems.append(f"Dynamics 365 Sales has no table {table_name}")
        return
    where = f"Dynamics 365 Sales {table_name}"
    binds: list[tuple[str, str, str]] = []
    options: list[tuple[str, object, str]] = []  # column, value, why
    if table.exists:
        for field_map in mapping.fields:
            toward = field_map.direction in TOWARD_DATAVERSE
            for column in field_map.dataverse.split("+"):
                _check_column(where, table.columns, column, field_map, toward, mapping, findings)
            target = _lookup_target(field_map)
            if target and toward:
                binds.append((table_name, field_map.dataverse, target))
            if field_map.transform and field_map.transform.startswith("option:") and toward:
                for choice in sorted(set(OPTION_MAPS[field_map.transform.partition(":")[2]].values())):
                    options.append((field_map.dataverse, choice, f"the {field_map.bc} → {field_map.dataverse} values"))
        for name, _, _ in _filter_comparisons(mapping.dataverse_filter, findings, "dataverse_filter"):
            if name not in table.columns and name.removeprefix("_").removesuffix("_value") not in table.columns:
                findings.problems.append(f"{where} has no column {name}, which the mapping's dataverse_filter compares")
        for name, value in mapping.dataverse_template:
            if name not in table.columns:
                findings.problems.append(f"{where} has no column {name}, which the mapping's dataverse_template sets")
            elif table.columns[name].get("AttributeType") in ("Picklist", "Status", "State"):
                options.append((name, value, "the mapping's dataverse_template"))
        for _, column in mapping.match_keys:
            if column not in table.columns:
                findings.problems.append(f"{where} has no column {column}, a match key of the mapping")
    for extra_table, column, target in mapping.extra_binds:
        if tables.get(extra_table, DataverseTable(None)).exists is False:
            findings.problems.append(f"Dynamics 365 Sales has no table {extra_table}, which the mapping writes")
        else:
            binds.append((extra_table, column, target))
    for bind_table, column, target in binds:
        try:
            await dv.navigation.name(bind_table, column, target)
        except UnknownLookup as exc:
            findings.problems.append(f"the lookup cannot be written: {exc}")
        except ApiError as exc:
            findings.warnings.append(f"navigation names of {bind_table} could not be read ({exc.status} {exc.code})")
    await _check_options(dv, table_name, options, findings)


def _check_column(where: str, columns: dict[str, dict[str, Any]], column: str, field_map: FieldMap, toward: bool,
                  mapping: TableMapping, findings: MappingFindings) -> None:
    attribute = columns.get(column)
    if attribute is None:
        findings.problems.append(f"{where} has no column {column} (mapped from {field_map.bc}): "
                                 f"{_switch_off(mapping, field_map)}")
        return
    if not toward:
        return
    create, update = bool(attribute.get("IsValidForCreate", True)), bool(attribute.get("IsValidForUpdate", True))
    if not (create if field_map.create_only else create or update):
        findings.problems.append(f"{where}.{column} cannot be written (IsValidForCreate {create}, IsValidForUpdate "
                                 f"{update}), but the field pair writes it: {_switch_off(mapping, field_map)}")


async def _check_options(dv: DataverseClient, table: str, wanted: list[tuple[str, object, str]],
                         findings: MappingFindings) -> None:
    if not wanted:
        return
    try:
        values = await dv.option_values(table)
    except ApiError as exc:
        findings.warnings.append(f"choice values of {table} could not be read ({exc.status} {exc.code})")
        return
    for column, value, why in wanted:
        if column in values and value not in values[column]:
            findings.problems.append(f"Dynamics 365 Sales {table}.{column} has no choice value {value} (its values: "
                                     f"{', '.join(map(str, sorted(values[column])))}), which {why} use")


# ---- helpers --------------------------------------------------------------------------------------------------

def _filter_comparisons(text: str | None, findings: MappingFindings, what: str) -> list[tuple[str, str, Any]]:
    try:
        return comparisons(text)
    except FilterError as exc:
        findings.problems.append(f"the mapping's {what} cannot be read: {exc}")
        return []


def _switch_off(mapping: TableMapping, field_map: FieldMap) -> str:
    return (f"switch the pair off with PATCH /admin/mappings/{mapping.name} "
            f'{{"fields": [{{"bc": "{field_map.bc}", "dataverse": "{field_map.dataverse}", "enabled": false}}]}} '
            "and run setup again")
