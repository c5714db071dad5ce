"""Coupling queries: which BC record belongs to which Dataverse record, per mapping."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.store.models import Coupling, DecoupledRecord
from service.store.outbox import utcnow


async def find(session: AsyncSession, mapping: str, side: str, record_id: str) -> Coupling | None:
    column = col(Coupling.bc_id) if side == "bc" else col(Coupling.dataverse_id)
    query = select(Coupling).where(col(Coupling.mapping) == mapping, column == record_id.lower())
    result = await session.execute(query)
    return result.scalar_one_or_none()


async def find_by_key(session: AsyncSession, mapping: str, bc_key: str) -> Coupling | None:
    """The coupling whose BC record has this code (BC codes are upper case: compared so). None for none, or when
    more than one claims it (a rename not yet synchronized): the caller asks BC then."""
    query = select(Coupling).where(col(Coupling.mapping) == mapping, col(Coupling.bc_key) == bc_key.upper()).limit(2)
    found = list((await session.execute(query)).scalars())
    return found[0] if len(found) == 1 else None


async def remember_key(session: AsyncSession, mapping: str, bc_id: str, bc_key: str) -> None:
    """Note the BC record's code on its coupling (couplings made before codes were kept, or by bulk matching)."""
    await session.execute(update(Coupling).where(col(Coupling.mapping) == mapping,
                                                 col(Coupling.bc_id) == bc_id.lower()).values(bc_key=bc_key.upper()))


async def find_by_id(session: AsyncSession, coupling_id: int) -> Coupling | None:
    return await session.get(Coupling, coupling_id)


async def save(session: AsyncSession, mapping: str, bc_id: str, dataverse_id: str, **values: Any) -> Coupling:
    """Create or update the coupling of two records (the pair is unique per mapping on both sides)."""
    coupling = await find(session, mapping, "bc", bc_id)
    now = utcnow()
    if coupling is None:
        coupling = Coupling(mapping=mapping, bc_id=bc_id.lower(), dataverse_id=dataverse_id.lower(), created_at=now,
                            updated_at=now)
        session.add(coupling)
    coupling.dataverse_id = dataverse_id.lower()
    coupling.updated_at = now
    for name, value in values.items():
        setattr(coupling, name, value)
    await session.flush()
    return coupling


async def remove(session: AsyncSession, coupling_id: int) -> None:
    await session.execute(delete(Coupling).where(col(Coupling.id) == coupling_id))


async def list_for(session: AsyncSession, mapping: str, limit: int = 1000, after_id: int = 0) -> list[Coupling]:
    result = await session.execute(
        select(Coupling)
        .where(col(Coupling.mapping) == mapping, col(Coupling.id) > after_id)
        .order_by(col(Coupling.id))
        .limit(limit)
    )
    return list(result.scalars())


def state(coupling: Coupling, side: str) -> dict[str, Any] | None:
    """A side's record as the last run read or wrote it (the mapping's columns and its ETag), None when not kept."""
    text = coupling.bc_state if side == "bc" else coupling.dataverse_state
    kept = json.loads(text) if text else None
    return kept if isinstance(kept, dict) else None


def state_etag(coupling: Coupling, side: str) -> str | None:
    """The ETag of a side's record as the last run read or wrote it (kept in its state), None when not kept."""
    etag = (state(coupling, side) or {}).get("@odata.etag")
    return str(etag) if etag else None


def info(coupling: Coupling) -> dict[str, Any]:
    return json.loads(coupling.info) if coupling.info else {}


async def mark_decoupled(session: AsyncSession, mapping: str, side: str, record_id: str) -> None:
    """Remember a survivor of remove-coupling (idempotent)."""
    if not await is_decoupled(session, mapping, side, record_id):
        session.add(DecoupledRecord(mapping=mapping, side=side, record_id=record_id.lower(), decoupled_at=utcnow()))
        await session.flush()


async def is_decoupled(session: AsyncSession, mapping: str, side: str, record_id: str) -> bool:
    query = select(col(DecoupledRecord.id)).where(col(DecoupledRecord.mapping) == mapping,
                                                  col(DecoupledRecord.side) == side,
                                                  col(DecoupledRecord.record_id) == record_id.lower())
    return (await session.execute(query)).first() is not None


async def forget_decoupled(session: AsyncSession, mapping: str, side: str, record_id: str) -> None:
    """An operator coupled the record again (or a full synchronization takes it up)."""
    await session.execute(delete(DecoupledRecord).where(col(DecoupledRecord.mapping) == mapping,
                                                        col(DecoupledRecord.side) == side,
                                                        col(DecoupledRecord.record_id) == record_id.lower()))
