"""What a field list describes: the values a record gives the other side, matching, and writes.

`FieldValues` is the part of `FieldRule` that computes and writes values; rules with special needs (generated
codes, products that must be activated, prices) override its methods in their own modules.
"""

from __future__ import annotations

from typing import Any

from consumers.rules import lookups
from consumers.rules.base import Rule
from consumers.rules.values import convert, join_name, split_name
from schemas.mappings import FieldMap
from schemas.vocabulary import Side
from service.matching import PREFETCHED, Matcher


class FieldValues(Rule):
    # --- values -------------------------------------------------------------------------------------------------

    async def values(self, toward: str, record: dict[str, Any], *, creating: bool = False) -> dict[str, Any]:
        """The fields this record gives the other side, in that side's format."""
        out: dict[str, Any] = {}
        for field in self.fields_toward(toward):
            if field.create_only and not creating:
                continue
            out.update(await self.field_value(field, toward, record))
        return out

    async def field_value(self, field: FieldMap, toward: str, record: dict[str, Any]) -> dict[str, Any]:
        kind, _, argument = (field.transform or "").partition(":")
        if kind == "lookup":
            return await self._lookup(argument, toward, field, record)
        if kind == "name":
            if toward == "dataverse":
                first, last = split_name(record.get(field.bc))
                return {"firstname": first, "lastname": last}
            return {field.bc: convert("text:100", "bc", join_name(record.get("firstname"), record.get("lastname")))}
        if kind == "parent":
            if toward == "dataverse":
                return await lookups.parent_to_dataverse(self.ctx, str(record.get(field.bc) or ""))
            return await lookups.parent_to_bc(self.ctx, record.get(f"_{field.dataverse}_value"))
        source, target = (field.bc, field.dataverse) if toward == "dataverse" else (field.dataverse, field.bc)
        return {target: convert(field.transform, toward, record.get(source))}

    async def _lookup(self, mapping: str, toward: str, field: FieldMap, record: dict[str, Any]) -> dict[str, Any]:
        if toward == "dataverse":
            value = str(record.get(field.bc) or "")
            if mapping == "CURRENCY":
                return await lookups.currency_to_dataverse(self.ctx, value)
            if mapping == "SALESPEOPLE":
                return await lookups.salesperson_to_dataverse(self.ctx, value)
            if mapping == "UNITOFMEASURE":
                return await lookups.unit_to_dataverse(self.ctx, value)
        else:
            reference = record.get(f"_{field.dataverse}_value")
            if mapping == "CURRENCY":
                return await lookups.currency_to_bc(self.ctx, reference)
            if mapping == "SALESPEOPLE":
                return await lookups.salesperson_to_bc(self.ctx, reference)
        raise ValueError(f"{self.name}: no lookup through {mapping} toward {toward}")

    # --- matching -----------------------------------------------------------------------------------------------

    async def match(self, toward: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Records on `toward` that are this record by the match keys (first key with a value decides). A full
        synchronization line prefetches them (`PREFETCHED`, service/matching.py): no request per record then."""
        prefetched = PREFETCHED.get()
        if prefetched is not None and prefetched.serves(self.mapping, toward):
            return await prefetched.candidates(record)
        return await Matcher(self.mapping, self.ctx.bc, self.ctx.dv).candidates(Side(toward), record)

    # --- writes -------------------------------------------------------------------------------------------------

    def template(self, toward: str) -> dict[str, Any]:
        return dict(self.mapping.dataverse_template if toward == "dataverse" else self.mapping.bc_template)

    async def create(self, toward: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = {**self.template(toward), **payload}  # template values never overwrite mapped values
        if toward == "bc":
            return await self.ctx.bc.create(self.mapping.bc_entity, body, api=self.mapping.bc_api)
        return await self.ctx.dv.create(self.dataverse_set, body)

    async def update(self, toward: str, target: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        target_id = self.record_id(toward, target)
        if toward == "bc":
            return await self.ctx.bc.update(self.mapping.bc_entity, target_id, payload, str(target["@odata.etag"]),
                                            api=self.mapping.bc_api)
        return await self.ctx.dv.update(self.dataverse_set, target_id, payload, target.get("@odata.etag"))

    async def delete(self, side: str, record: dict[str, Any]) -> None:
        record_id = self.record_id(side, record)
        if side == "bc":
            await self.ctx.bc.delete(self.mapping.bc_entity, record_id, str(record.get("@odata.etag", "*")),
                                     api=self.mapping.bc_api)
        else:
            await self.ctx.dv.delete(self.dataverse_set, record_id)
