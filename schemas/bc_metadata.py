"""A Business Central API route's `$metadata` (OData CSDL XML), read into what the setup check needs: per
entity set, its fields with their type, whether BC computes them, and an enum field's member names.

Sources: "Developing connect apps" (append `$metadata` to the API URL); "Developing a custom API" (enum fields
are typed `Microsoft.NAV.<enum>` with an `EnumType` of `Member` elements; Options are plain `Edm.String`).
How BC marks a read-only field in an API route's metadata is not documented: a field annotated
`Org.OData.Core.V1.Computed` or with `Org.OData.Core.V1.Permissions` Read is taken as read-only; without
either annotation a field counts as writable (BC answers a write of a read-only field with 400 then).
Enum member names are XML-encoded (`_x0020_` for the blank member) and decoded here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from defusedxml import ElementTree

_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
_ENCODED = re.compile(r"_x([0-9A-Fa-f]{4})_")
_READ_ONLY_TERMS = ("Org.OData.Core.V1.Computed", "Core.V1.Computed")


class MetadataError(ValueError):
    """The document is not a CSDL document this module can read."""


@dataclass(frozen=True)
class FieldShape:
    type: str  # Edm.String, Microsoft.NAV.customerBlocked, …
    read_only: bool
    members: tuple[str, ...] | None = None  # an enum's members, decoded (" " for the blank one)


EntitySets = dict[str, dict[str, FieldShape]]  # entity set → field → shape


def decode_name(name: str) -> str:
    """`_x0020_` → " ", `In_x0020_Review` → "In Review" (XML name encoding of enum members and values)."""
    return _ENCODED.sub(lambda m: chr(int(m.group(1), 16)), name)


def parse(document: bytes) -> EntitySets:
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError as exc:
        raise MetadataError(f"not XML: {exc}") from None
    enums: dict[str, tuple[str, ...]] = {}
    types: dict[str, dict[str, tuple[str, bool]]] = {}
    sets: dict[str, str] = {}
    for schema in root.iter(f"{_EDM}Schema"):
        namespace = schema.get("Namespace", "")
        for enum in schema.iter(f"{_EDM}EnumType"):
            members = tuple(decode_name(m.get("Name", "")) for m in enum.iter(f"{_EDM}Member"))
            enums[f"{namespace}.{enum.get('Name')}"] = members
        for entity in schema.iter(f"{_EDM}EntityType"):
            types[f"{namespace}.{entity.get('Name')}"] = {
                prop.get("Name", ""): (prop.get("Type", ""), _read_only(prop))
                for prop in entity.findall(f"{_EDM}Property")}
        for container in schema.iter(f"{_EDM}EntityContainer"):
            for entity_set in container.iter(f"{_EDM}EntitySet"):
                sets[entity_set.get("Name", "")] = entity_set.get("EntityType", "")
    if not sets and not types:
        raise MetadataError("no entity sets or entity types")
    out: EntitySets = {}
    for name, type_name in sets.items():
        raw = types.get(type_name, {})
        out[name] = {field: FieldShape(kind, read_only, enums.get(kind)) for field, (kind, read_only) in raw.items()}
    return out


def _read_only(prop: Any) -> bool:
    for annotation in prop.iter(f"{_EDM}Annotation"):
        term = annotation.get("Term", "")
        if term in _READ_ONLY_TERMS and annotation.get("Bool", "true").lower() == "true":
            return True
        if term.endswith("Core.V1.Permissions"):
            text = " ".join([annotation.get("EnumMember", ""), *(e.text or "" for e in annotation.iter())])
            if "Permission/Read" in text and "ReadWrite" not in text and "Permission/Write" not in text:
                return True
    return False
