"""Record leases: one worker at a time per record and mapping (in any process, on any machine)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import RecordLock
from service.store.outbox import utcnow

T = RecordLock.__table__  # type: ignore[attr-defined]


async def acquire(session: AsyncSession, keys: Sequence[str], owner: str, lease_seconds: float) -> bool:
    """Take every key or none: a key held by another owner whose lease has not run out refuses."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds)
    for key in sorted(set(keys)):
        upsert = insert(T).values(key=key, owner=owner, locked_until=until)
        statement = upsert.on_conflict_do_update(
            index_elements=["key"], set_={"owner": owner, "locked_until": until},
            where=(T.c.locked_until < now) | (T.c.owner == owner),
        ).returning(T.c.key)
        if (await session.execute(statement)).first() is None:
            return False  # the caller's unit of work rolls back what it took so far
    return True


async def release(session: AsyncSession, keys: Sequence[str], owner: str) -> None:
    await session.execute(delete(T).where(T.c.key.in_(list(keys)), T.c.owner == owner))


async def count_live(session: AsyncSession, prefix: str) -> int:
    """How many keys starting with `prefix` hold a lease that has not run out (e.g. live workers)."""
    query = select(func.count()).select_from(T).where(T.c.key.startswith(prefix, autoescape=True),
                                                      T.c.locked_until >= utcnow())
    return int((await session.execute(query)).scalar_one())
