"""The request budgets are the installation's, not each worker's: the running workers divide them.

Business Central and Dataverse count 6,000 requests per 5 minutes per user, whichever process sends them.
Each worker keeps a lease `peer:worker:<id>` in the store, renewed every PEER_SECONDS, counts the leases
that have not run out, and keeps to its part of each budget (`RequestBudget.share`). When workers come and
go (a scaler, a crash), the others follow within PEER_SECONDS (a crashed worker's lease runs out after
PEER_TTL): for that moment the sum may exceed the budget by one worker's part, a small fraction of a
5-minute window.
"""

from __future__ import annotations

import asyncio
import uuid

from service.connectors.budget import RequestBudget
from service.logging import get_logger
from service.store import locks
from service.store.db import Database

log = get_logger(__name__)
PREFIX = "peer:worker:"
PEER_SECONDS, PEER_TTL = 10.0, 30.0


async def heartbeat(db: Database, key: str) -> int:
    """Renew this worker's lease; the number of live workers (this one included)."""
    async with db.session() as session:
        await locks.acquire(session, [key], key, PEER_TTL)
    async with db.session() as session:
        return max(1, await locks.count_live(session, PREFIX))


async def share_budgets(db: Database, budgets: list[RequestBudget], every: float = PEER_SECONDS) -> None:
    """Run beside the consumers until cancelled; the lease is given back on the way out."""
    key = f"{PREFIX}{uuid.uuid4().hex}"
    parts = 0
    try:
        while True:
            try:
                live = await heartbeat(db, key)
                if live != parts:
                    parts = live
                    for budget in budgets:
                        budget.share(live)
                    log.info("request budgets shared", workers=live,
                             per_worker=[budget.limit for budget in budgets])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is unreachable: keep the last share until it is back
                log.warning("could not count the running workers", error=str(exc)[:300])
            await asyncio.sleep(every)
    finally:
        try:
            async with db.session() as session:
                await locks.release(session, [key], key)
        except Exception as exc:  # stopping anyway: the lease runs out by itself after PEER_TTL
            log.warning("could not give back the worker lease", error=str(exc)[:300])
