"""Table mappings: list, show, change (only while on hold), hold and resume."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from schemas.mapping_config import MappingChanges, describe, merge, problems
from schemas.mappings import BY_NAME, MAPPINGS
from service.api.admin import require_admin
from service.api.deps import DatabaseDep
from service.api.models_mappings import HoldResult, Mapping, MappingDetail, MappingVersion
from service.logging import get_logger
from service.store import locks, mapping_configs

log = get_logger(__name__)
# A mapping's name as in mappings.md (documented with an example, which the OpenAPI-driven fuzz also uses).
MappingName = Annotated[str, Path(examples=["CUSTOMER"])]
HOLD_WAIT_SECONDS = 25.0  # a record lease lasts 20 s unless its run renews it
router = APIRouter(prefix="/admin/mappings", tags=["admin: mappings"], dependencies=[Depends(require_admin)])


def known(name: str) -> str:
    if name not in BY_NAME:
        raise HTTPException(404, f"no mapping {name!r}; mappings: {', '.join(BY_NAME)}")
    return name


@router.get("", response_model=list[Mapping])
async def list_mappings(db: DatabaseDep) -> list[Mapping]:
    """Every mapping with its effective settings, hold state and version, in dependency-table order."""
    async with db.session() as session:
        rows = await mapping_configs.all_configs(session)
    out = []
    for mapping in MAPPINGS:
        row = rows.get(mapping.name)
        out.append(Mapping.model_validate({**describe(mapping, mapping_configs.config_of(row)),
                                           "on_hold": bool(row and row.on_hold), "version": row.version if row else 1}))
    return out


@router.get("/{name}", response_model=MappingDetail, responses={404: {}})
async def show_mapping(name: MappingName, db: DatabaseDep) -> MappingDetail:
    """One mapping: settings, fields (enabled, direction), dependencies, hold state, version history."""
    known(name)
    async with db.session() as session:
        row = await mapping_configs.get(session, name)
        history = await mapping_configs.versions(session, name)
    return MappingDetail.model_validate({
        **describe(BY_NAME[name], mapping_configs.config_of(row)), "on_hold": row.on_hold, "version": row.version,
        "history": [MappingVersion(version=v.version, changed_at=v.changed_at, config=v.config) for v in history]})


@router.patch("/{name}", response_model=Mapping, responses={400: {}, 404: {}, 409: {}})
async def change_mapping(name: MappingName, changes: MappingChanges, db: DatabaseDep) -> Mapping:
    """Change a mapping. Refused unless the mapping is on hold (put jobs on hold while you change mappings)."""
    known(name)
    async with db.session() as session:
        row = await mapping_configs.get(session, name)
        if not row.on_hold:
            raise HTTPException(409, f"{name} is not on hold: put it on hold (POST /admin/mappings/{name}/hold) "
                                     "before changing it, and resume it afterwards")
        stored = mapping_configs.config_of(row)
        found = problems(name, changes, stored)
        if found:
            raise HTTPException(400, "; ".join(found))
        row = await mapping_configs.save(session, name, merge(stored, changes))
        log.info("mapping changed", mapping=name, version=row.version)
        return Mapping.model_validate({**describe(BY_NAME[name], mapping_configs.config_of(row)),
                                       "on_hold": row.on_hold, "version": row.version})


async def _set_hold(name: str, on_hold: bool, db: DatabaseDep) -> dict[str, Any]:
    """Hold or resume; the answer of `hold`/`resume` as a dict (tests/integration/test_hold.py calls it)."""
    names = [m.name for m in MAPPINGS] if name == "all" else [known(name)]
    async with db.session() as session:
        for each in names:
            await mapping_configs.set_hold(session, each, on_hold)
    applying = await _runs_in_flight(db, names) if on_hold else 0
    log.info("mappings held" if on_hold else "mappings resumed", mappings=names, runs_in_flight=applying)
    return {"mappings": names, "on_hold": on_hold, "runs_in_flight": applying}


async def _runs_in_flight(db: DatabaseDep, names: list[str]) -> int:
    """Wait until the runs that took their record lease before the hold was stored have ended. A run checks
    the hold under its lease (consumers/sync.py), so once these are gone nothing of the mappings is applied:
    the answer means "held". A run of a worker that died keeps its lease until it runs out (LEASE_SECONDS);
    after HOLD_WAIT_SECONDS the answer says how many runs may still be finishing."""
    deadline = time.monotonic() + HOLD_WAIT_SECONDS
    while True:
        async with db.session() as session:
            live = sum([await locks.count_live(session, f"{each}:") for each in names])
        if live == 0 or time.monotonic() >= deadline:
            return live
        await asyncio.sleep(0.05)


@router.post("/{name}/hold", response_model=HoldResult, responses={404: {}})
async def hold(name: MappingName, db: DatabaseDep) -> HoldResult:
    """Stop applying a mapping's events (`all` for every mapping); they wait in its queue. Answers once no
    run of the mapping is applying anything (`runs_in_flight` 0), or after 25 s with the runs still going."""
    return HoldResult.model_validate(await _set_hold(name, True, db))


@router.post("/{name}/resume", response_model=HoldResult, responses={404: {}})
async def resume(name: MappingName, db: DatabaseDep) -> HoldResult:
    """Apply a held mapping's events again, in order (`all` for every mapping)."""
    return HoldResult.model_validate(await _set_hold(name, False, db))
