"""What this tenant's API looks like: which fields exist, how enum values are spelled, whether the custom
API is installed. Memory keeps every field and the AL member names; this turns rows into API JSON.

The same rows look different per reading (sandbox/config.py): `enum_style`, `missing_fields`, `custom_api`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sandbox.bc.entities import CONTACT_INFO, CUSTOM, ENTITIES, LCY_CODE, LCY_TRANSLATED, EntityDef
from sandbox.bc.enums import ENUMS, encode
from sandbox.bc.store import Row
from sandbox.config import SandboxConfig


class Shape:
    def __init__(self, config: SandboxConfig) -> None:
        self.encoded = config.enum_style == "encoded"
        self.custom_api = config.custom_api
        known = {**ENTITIES, CONTACT_INFO.name: CONTACT_INFO}
        missing: dict[str, set[str]] = {}
        for spec in config.missing_fields:
            set_name, _, field_name = spec.partition(".")
            if set_name not in known or field_name not in known[set_name].fields or field_name == "id":
                raise ValueError(f"sandbox setting missing_fields: unknown field '{spec}' (<entity set>.<field>)")
            missing.setdefault(set_name, set()).add(field_name)
        self.views: dict[str, EntityDef] = {
            name: dataclasses.replace(entity, fields={k: v for k, v in entity.fields.items()
                                                      if k not in missing.get(name, set())})
            for name, entity in known.items()
        }
        # Per entity set: enum field → {member: JSON value}, precomputed (a 20,000-row page is on the hot path).
        self._spelling = {
            name: {field: {m: encode(m) if self.encoded else m for m in enum.names}
                   for (set_name, field), enum in ENUMS.items() if set_name == name}
            for name in known
        }

    def view(self, name: str) -> EntityDef:
        """The entity set as the API has it: the fields this tenant lacks are gone."""
        return self.views[name]

    def installed(self, entity: EntityDef) -> bool:
        return entity.api != CUSTOM or self.custom_api

    def data(self, name: str, data: dict[str, Any], select: list[str] | None = None) -> dict[str, Any]:
        fields = self.views[name].fields
        spelling = self._spelling[name]
        names = select if select is not None else [k for k in data if k in fields]
        out = {k: data[k] for k in names}
        for field, spelled in spelling.items():
            if field in out:
                out[field] = spelled.get(out[field], out[field])
        if name in LCY_TRANSLATED and out.get("currencyCode") == "":
            out["currencyCode"] = LCY_CODE  # a blank currency shows as the LCY code (see entities.LCY_CODE)
        return out

    def row(self, name: str, row: Row, select: list[str] | None = None) -> dict[str, Any]:
        """A stored row as API JSON: `@odata.etag` first, then the fields (or `$select`)."""
        return {"@odata.etag": row.etag, **self.data(name, row.data, select)}
