"""Stored mapping changes and hold states (`mapping_config`), with every accepted version kept; and what
setup found out about each mapping (whether it can run, how BC's changes reach us)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from schemas.mapping_config import effective
from schemas.mappings import MAPPINGS, TableMapping
from service.store.models import MappingConfig, MappingConfigVersion
from service.store.outbox import utcnow


async def all_configs(session: AsyncSession) -> dict[str, MappingConfig]:
    return {row.mapping: row for row in (await session.execute(select(MappingConfig))).scalars()}


async def get(session: AsyncSession, mapping: str) -> MappingConfig:
    """The mapping's stored row (made with the defaults on first use)."""
    row = await session.get(MappingConfig, mapping)
    if row is None:
        row = MappingConfig(mapping=mapping, config="{}", on_hold=False, version=1, updated_at=utcnow())
        session.add(row)
        await session.flush()
    return row


async def is_held(session: AsyncSession, mapping: str) -> bool:
    """Read under a share lock where the store has one (PostgreSQL): a hold stored meanwhile waits until the
    caller's transaction (a run taking its record lease) has committed, so the hold's answer, which waits for
    the leases it can see, cannot miss that run. SQLite runs one writer at a time anyway."""
    query = select(MappingConfig).where(col(MappingConfig.mapping) == mapping)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    row = (await session.execute(query)).scalars().first()
    return bool(row is not None and row.on_hold)


def config_of(row: MappingConfig | None) -> dict[str, Any]:
    return json.loads(row.config) if row is not None and row.config else {}


async def configured(session: AsyncSession) -> list[tuple[TableMapping, MappingConfig | None]]:
    """Every mapping with the installation's changes applied, beside its stored row (setup's findings)."""
    rows = await all_configs(session)
    return [(effective(m, config_of(rows.get(m.name))), rows.get(m.name)) for m in MAPPINGS]


async def save(session: AsyncSession, mapping: str, config: dict[str, Any]) -> MappingConfig:
    row = await get(session, mapping)
    row.config = json.dumps(config, sort_keys=True)
    row.version += 1
    row.updated_at = utcnow()
    session.add(MappingConfigVersion(mapping=mapping, version=row.version, config=row.config,
                                     changed_at=row.updated_at))
    await session.flush()
    return row


async def set_hold(session: AsyncSession, mapping: str, on_hold: bool) -> MappingConfig:
    row = await get(session, mapping)
    row.on_hold = on_hold
    row.updated_at = utcnow()
    await session.flush()
    return row


async def set_findings(session: AsyncSession, mapping: str, *, unavailable: str | None,
                       bc_delivery: str | None) -> MappingConfig:
    """Setup's findings: why the mapping is kept off (None: it runs), and `push`/`poll`/`none` for BC."""
    row = await get(session, mapping)
    row.unavailable = unavailable[:4000] if unavailable else None
    row.bc_delivery = bc_delivery
    row.updated_at = utcnow()
    await session.flush()
    return row


async def set_bc_delivery(session: AsyncSession, mapping: str, bc_delivery: str) -> None:
    row = await get(session, mapping)
    if row.bc_delivery != bc_delivery:
        row.bc_delivery = bc_delivery
        row.updated_at = utcnow()
        await session.flush()


async def versions(session: AsyncSession, mapping: str) -> list[MappingConfigVersion]:
    query = select(MappingConfigVersion).where(MappingConfigVersion.mapping == mapping)  # type: ignore[arg-type]
    return list((await session.execute(query.order_by(MappingConfigVersion.version))).scalars())  # type: ignore[arg-type]
