"""Match-based coupling ("Generate Integration IDs"): couple records that exist on both sides by a
mapping's match keys, without writing to either system.

Memory holds the Dataverse side's key values and ids (not the records); the BC side is streamed.
"""

from __future__ import annotations

from typing import Any

from schemas.mappings import DATAVERSE_SETS, TableMapping
from schemas.odata_filter import matches
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.store import couplings
from service.store.db import Database

REPORT_IDS = 1000  # ids listed per category in the report (all are counted)


def _key(value: Any) -> str | None:
    text = str(value).strip().lower() if value not in (None, "") else ""
    return text or None


async def match_and_couple(mapping: TableMapping, bc: BusinessCentralClient, dv: DataverseClient,
                           db: Database) -> dict[str, Any]:
    coupled_bc: set[str] = set()
    coupled_dv: set[str] = set()
    after = 0
    while True:
        async with db.session() as session:
            page = await couplings.list_for(session, mapping.name, limit=1000, after_id=after)
        if not page:
            break
        after = page[-1].id or after
        coupled_bc.update(c.bc_id for c in page)
        coupled_dv.update(c.dataverse_id for c in page)
    key_column = f"{mapping.dataverse_entity}id"
    index: list[dict[str, list[str]]] = [{} for _ in mapping.match_keys]
    dv_left: set[str] = set()
    async for row in dv.list(DATAVERSE_SETS[mapping.dataverse_entity]):
        record_id = str(row[key_column]).lower()
        if record_id in coupled_dv or not matches(mapping.dataverse_filter, row):
            continue
        dv_left.add(record_id)
        for position, (_, dv_field) in enumerate(mapping.match_keys):
            value = _key(row.get(dv_field))
            if value:
                index[position].setdefault(value, []).append(record_id)
    coupled, ambiguous, unmatched_bc = 0, [], []
    async for record in bc.list(mapping.bc_entity, api=mapping.bc_api):
        record_id = str(record["id"]).lower()
        if record_id in coupled_bc or not matches(mapping.bc_filter, record):
            continue
        outcome = "unmatched"
        for position, (bc_field, _) in enumerate(mapping.match_keys):
            value = _key(record.get(bc_field))
            candidates = [c for c in index[position].get(value, []) if c in dv_left] if value else []
            if len(candidates) == 1:
                async with db.session() as session:
                    await couplings.save(session, mapping.name, record_id, candidates[0],
                                         last_result="coupled by match")
                    await couplings.forget_decoupled(session, mapping.name, "bc", record_id)
                    await couplings.forget_decoupled(session, mapping.name, "dataverse", candidates[0])
                dv_left.discard(candidates[0])
                coupled += 1
                outcome = "coupled"
                break
            if len(candidates) > 1:
                outcome = "ambiguous"
                break
        if outcome == "ambiguous":
            ambiguous.append(record_id)
        elif outcome == "unmatched":
            unmatched_bc.append(record_id)
    unmatched_dv = sorted(dv_left)
    return {
        "mapping": mapping.name, "coupled": coupled, "already_coupled": len(coupled_bc),
        "ambiguous": len(ambiguous), "unmatched_bc": len(unmatched_bc), "unmatched_dataverse": len(unmatched_dv),
        "ambiguous_bc_ids": ambiguous[:REPORT_IDS], "unmatched_bc_ids": unmatched_bc,
        "unmatched_dataverse_ids": unmatched_dv,
    }
