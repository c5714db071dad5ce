"""`GET …/api/<api>/$metadata`: the API's CSDL document (OData v4 EDMX, XML).

Learn "Developing connect apps": "Append `$metadata` to the URL to also get information about the fields in
the APIs"; the tips page says the same for a custom API's endpoint. One Schema "Microsoft.NAV" holds an
EntityType per entity set (named after the page's EntityName), the enum types, and the EntityContainer.
Learn "Developing a custom API" (TIP): an enum field is typed `Microsoft.NAV.<enum>` and its EnumType lists
every member (`<Member Name="Petrol" Value="0"/>`); member names are the OData identifiers of the AL names
("_x0020_" for the blank member, sandbox/bc/enums.py) whatever `enum_style` the JSON uses.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

from sandbox.bc.entities import CONTACT_INFO, ENTITIES, LINES_OF, V2, EntityDef
from sandbox.bc.enums import ENUMS, EnumDef, encode
from sandbox.bc.shape import Shape

EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
EDM = "http://docs.oasis-open.org/odata/ns/edm"
NS = "Microsoft.NAV"
_COMPANY: dict[str, Any] = {"id": "", "systemVersion": "", "name": "", "displayName": "", "businessProfileId": "",
                            "systemCreatedAt": "", "systemModifiedAt": ""}


def edm_type(name: str, default: Any) -> str:
    """The Edm type of a field, from its name and its default's Python type (sandbox/bc/entities.py)."""
    if (name == "id" or name.endswith("Id")) and name != "businessProfileId":
        return "Edm.Guid"  # SystemId and the ids of related records
    if name.endswith(("DateTime", "At")):
        return "Edm.DateTimeOffset"  # lastModifiedDateTime (SystemModifiedAt), systemCreatedAt
    if name.endswith("Date"):
        return "Edm.Date"
    if isinstance(default, bool):
        return "Edm.Boolean"
    if isinstance(default, float):
        return "Edm.Decimal"
    if isinstance(default, int):
        return "Edm.Int32"
    return "Edm.String"


def _open(name: str, **attrs: str) -> str:
    return "<" + " ".join([name, *(f"{k}={quoteattr(v)}" for k, v in attrs.items())]) + ">"


def _tag(name: str, **attrs: str) -> str:
    return _open(name, **attrs)[:-1] + "/>"


def _entity_sets(shape: Shape, api: str) -> list[EntityDef]:
    sets = [shape.view(e.name) for e in ENTITIES.values() if e.api == api]
    return [*sets, shape.view(CONTACT_INFO.name)] if api == V2 else sets


def _entity_type(entity: EntityDef, key: str) -> list[str]:
    out = [_open("EntityType", Name=entity.entity), "<Key>", _tag("PropertyRef", Name=key), "</Key>"]
    for name, default in entity.fields.items():
        enum = ENUMS.get((entity.name, name))
        attrs = {"Name": name, "Type": f"{NS}.{enum.name}" if enum else edm_type(name, default)}
        if name == key:
            attrs["Nullable"] = "false"
        if name not in entity.readonly:
            out.append(_tag("Property", **attrs))
            continue
        # How BC marks read-only fields in $metadata is unverified (no published API v2.0 $metadata shows
        # it); this uses the OData Core vocabulary's term.
        out += [_open("Property", **attrs),
                _tag("Annotation", Term="Org.OData.Core.V1.Computed", Bool="true"), "</Property>"]
    lines = LINES_OF.get(entity.name)
    if lines:
        out.append(_tag("NavigationProperty", Name=lines, Type=f"Collection({NS}.{ENTITIES[lines].entity})",
                        ContainsTarget="true"))
    if entity.name == "customers":  # the part on page 30009 (SubPageLink "Related Id" = SystemId)
        out.append(_tag("NavigationProperty", Name=CONTACT_INFO.name,
                        Type=f"Collection({NS}.{CONTACT_INFO.entity})", ContainsTarget="true"))
    return [*out, "</EntityType>"]


def _enum_type(enum: EnumDef) -> list[str]:
    members = [_tag("Member", Name=encode(member), Value=str(value)) for value, member in enum.members]
    return [_open("EnumType", Name=enum.name), *members, "</EnumType>"]


def document(shape: Shape, api: str) -> str:
    """The CSDL of `api` ("v2.0" or the custom "bcsync/integration/v1.0") as this tenant has it."""
    sets = _entity_sets(shape, api)
    company = EntityDef("companies", "Company", _COMPANY, api=api, entity="company", readonly=frozenset(_COMPANY))
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             _open("edmx:Edmx", Version="4.0", **{"xmlns:edmx": EDMX}), "<edmx:DataServices>",
             _open("Schema", Namespace=NS, xmlns=EDM)]
    for entity in [company, *sets]:
        lines += _entity_type(entity, "contactId" if entity.name == CONTACT_INFO.name else "id")
    used = {enum.name: enum for (name, field), enum in ENUMS.items()
            if any(e.name == name and field in e.fields for e in sets)}
    for enum in used.values():
        lines += _enum_type(enum)
    lines.append(_open("EntityContainer", Name="NAV"))
    lines += [_tag("EntitySet", Name=e.name, EntityType=f"{NS}.{e.entity}") for e in [company, *sets]]
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines) + "\n"
