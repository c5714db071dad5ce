"""A run's leases on the records it applies: one worker at a time per record, in any process.

Leases are short and renewed while the run goes on, so that the records of a worker that died (SIGKILL, a
lost machine) or could not give them back (the database went away) are free again within LEASE_SECONDS,
not minutes later. Each run is its own owner: two runs in one worker exclude each other too.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from consumers.errors import MappingHeld, RecordBusy
from schemas.vocabulary import Side
from service.logging import get_logger
from service.store import couplings, locks, mapping_configs
from service.store.db import Database
from service.store.models import Coupling

log = get_logger(__name__)

LEASE_SECONDS = 20.0  # renewed every LEASE_SECONDS / 4 while the run lasts
T = TypeVar("T")

LOCK_TRIES, LOCK_WAIT = 8, 0.05  # up to ~1.8 s of waiting for a busy record before giving up (RecordBusy)


class Lease:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.owner = uuid.uuid4().hex
        self.keys: list[str] = []
        self._renewal: asyncio.Task[None] | None = None

    async def add(self, keys: Sequence[str], what: str, *, wait: bool = True,
                  then: Callable[[AsyncSession], Awaitable[T]] | None = None) -> T | None:
        """Hold `keys` too (all or none), else RecordBusy. With `wait`, a busy key is tried again for a moment
        — only while this lease holds nothing yet: a run that holds keys while waiting for more could wait for
        a run that waits for it (two runs of one coupled pair, one from each side). `then` reads what the
        lease protects in the same transaction (one round of the store fewer per run) and its result is
        returned."""
        wanted = sorted(set(self.keys) | set(keys))
        tries = LOCK_TRIES if wait and not self.keys else 1
        for attempt in range(tries):
            result: T | None = None
            async with self.db.session() as session:
                taken = await locks.acquire(session, wanted, self.owner, LEASE_SECONDS)
                if taken:
                    result = await then(session) if then is not None else None
                else:
                    await session.rollback()  # give back what this attempt took: all or none
            if taken:  # committed: only now is it this lease's to renew and release
                self.keys = wanted
                self._renew()
                return result
            if attempt + 1 < tries:
                # Usually the holder is another run in this very worker that is about to finish: waiting a
                # moment here is far cheaper than a round trip through a delay queue.
                await asyncio.sleep(LOCK_WAIT * (attempt + 1))
        raise RecordBusy(f"{what} is being synchronized by another worker")

    def _renew(self) -> None:
        if self._renewal is None:
            self._renewal = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 4)
            try:
                async with self.db.session() as session:
                    if not await locks.acquire(session, self.keys, self.owner, LEASE_SECONDS):
                        log.warning("a record lease ran out while its run went on", keys=self.keys)
            except Exception as exc:  # the store is away: the next renewal tries again
                log.warning("could not renew a record lease", error=str(exc)[:300])

    async def release(self, session: AsyncSession | None = None) -> None:
        """Give the keys back, in `session` if given (committed with the caller's other writes)."""
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            self._renewal = None
        if not self.keys:
            return
        if session is not None:
            await locks.release(session, self.keys, self.owner)
        else:
            async with self.db.session() as own:
                await locks.release(own, self.keys, self.owner)


async def lease_pair(db: Database, mapping: str, side: Side, record_id: str,
                     tries: int = 3) -> tuple[Lease, Coupling | None]:
    """Lease a record and its coupled counterpart together (all or none, so that two runs of one pair never hold
    one key each), and the coupling as it is under that lease. MappingHeld when the mapping is on hold."""
    what = f"{mapping} {side} {record_id}"

    async def current(session: AsyncSession) -> Coupling | None:
        # Under the lease, in its transaction: a hold acknowledged before the lease was taken is seen here,
        # and the hold's answer waits for the leases taken before it (service/api/admin_mappings.py).
        if await mapping_configs.is_held(session, mapping):
            raise MappingHeld(mapping)
        return await couplings.find(session, mapping, side, record_id)

    def pair(coupling: Coupling | None) -> tuple[object, ...] | None:
        return (coupling.id, coupling.bc_id, coupling.dataverse_id) if coupling is not None else None

    for _ in range(tries):
        async with db.session() as session:
            coupling = await current(session)
        keys = [f"{mapping}:{side}:{record_id}"]
        if coupling is not None:
            other = side.other
            keys.append(f"{mapping}:{other}:{coupling.bc_id if other is Side.BC else coupling.dataverse_id}")
        lease = Lease(db)
        now = await lease.add(keys, what, then=current)  # coupled (or re-coupled) while we waited?
        if pair(now) == pair(coupling):
            return lease, now
        await lease.release()  # the keys were those of an older coupling: take the right ones
    raise RecordBusy(f"{what} keeps being coupled by other runs")
