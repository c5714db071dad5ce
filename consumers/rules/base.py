"""A mapping rule: the data of a TableMapping plus what it takes to read, map, match and write records.

`Rule` does everything a mapping's field list describes; a mapping with special needs (generated codes,
products that must be activated, contacts that live under a parent) subclasses it in its own module.
Sides are named "bc" and "dataverse"; values are computed *toward* a side.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from consumers.rules import lookups
from consumers.rules.context import SyncContext, odata_text
from consumers.rules.values import convert, join_name, split_name
from schemas.mappings import DATAVERSE_SETS, Direction, FieldMap, TableMapping
from schemas.odata_filter import matches

if TYPE_CHECKING:
    from consumers.sync import Applied, SyncEngine
    from schemas.events import ChangeEvent
    from service.store.models import Coupling

OTHER = {"bc": "dataverse", "dataverse": "bc"}
_ALLOWED = {"dataverse": (Direction.TO_CRM, Direction.BOTH), "bc": (Direction.FROM_CRM, Direction.BOTH)}


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Rule:
    def __init__(self, mapping: TableMapping, ctx: SyncContext) -> None:
        self.mapping = mapping
        self.ctx = ctx
        # Setup's findings (mapping_config): why the mapping is kept off, and how BC's changes reach us.
        self.unavailable: str | None = None
        self.bc_delivery: str | None = None
        self.dataverse_set = DATAVERSE_SETS[mapping.dataverse_entity]
        self.dataverse_key = f"{mapping.dataverse_entity}id"

    @property
    def name(self) -> str:
        return self.mapping.name

    # --- identity -----------------------------------------------------------------------------------------------

    def handles(self, side: str, entity: str) -> bool:
        """Whether events of this table are this rule's records (lines and the like are not)."""
        return entity == (self.mapping.bc_entity if side == "bc" else self.mapping.dataverse_entity)

    async def event_record_id(self, side: str, event: ChangeEvent) -> str | None:
        """The id of this rule's record an event concerns (a document line's event concerns its header);
        None: the event concerns no record of this rule."""
        return event.record_id

    def record_id(self, side: str, record: dict[str, Any]) -> str:
        return str(record["id"] if side == "bc" else record[self.dataverse_key]).lower()

    def modified(self, side: str, record: dict[str, Any]) -> datetime | None:
        return parse_time(record.get("lastModifiedDateTime" if side == "bc" else "modifiedon"))

    async def read(self, side: str, record_id: str) -> dict[str, Any] | None:
        if side == "bc":
            return await self.ctx.bc.get(self.mapping.bc_entity, record_id, api=self.mapping.bc_api)
        return await self.ctx.dv.get(self.dataverse_set, record_id)

    async def records(self, side: str, filter_: str | None = None) -> Any:
        """Every record of a side (streamed page by page), optionally only those matching `filter_`."""
        if side == "bc":
            return self.ctx.bc.list(self.mapping.bc_entity, api=self.mapping.bc_api, filter=filter_)
        return self.ctx.dv.list(self.dataverse_set, filter=filter_)

    # --- participation ------------------------------------------------------------------------------------------

    def included(self, side: str, record: dict[str, Any]) -> bool:
        return matches(self.mapping.bc_filter if side == "bc" else self.mapping.dataverse_filter, record)

    def fields_toward(self, target: str) -> list[FieldMap]:
        return [f for f in self.mapping.fields if f.direction in _ALLOWED[target]]

    def creates_toward(self, target: str) -> bool:
        """New records of the other side become new records on `target` (the mapping's direction)."""
        return self.mapping.direction in _ALLOWED[target]

    def catch_up_sides(self) -> list[str]:
        """The sides whose changed records a catch-up reads: those whose records flow to the other side."""
        return [side for side in ("bc", "dataverse") if self.creates_toward(OTHER[side])]

    async def apply(self, engine: SyncEngine, side: str, record_id: str, coupling: Coupling | None, deleted: bool,
                    record: dict[str, Any] | None) -> Applied | None:
        """A rule may take over applying one record (documents: headers with lines, state changes);
        None leaves it to the engine's field-by-field flow. Runs under the engine's record lease."""
        return None

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
        """Records on `toward` that are this record by the match keys (first key with a value decides)."""
        for bc_field, dataverse_field in self.mapping.match_keys:
            value = record.get(dataverse_field if toward == "bc" else bc_field)
            if value in (None, ""):
                continue
            column = bc_field if toward == "bc" else dataverse_field
            found = [r async for r in await self.records(toward, f"{column} eq {odata_text(str(value))}")]
            if found:
                return found[:5]
        return []

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
