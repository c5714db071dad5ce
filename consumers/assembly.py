"""Put the sync engine together for a worker process: clients, rules, engine, handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from consumers.handlers import HANDLERS, Handler
from consumers.jobs.runner import JobRunner
from consumers.jobs.settings import JobSettings
from consumers.memory import trim_memory
from consumers.peers import share_budgets
from consumers.rules.context import SyncContext
from consumers.sync import SyncEngine
from consumers.worker import Worker
from schemas.mapping_config import effective
from schemas.mappings import BY_NAME
from service.broker import Broker
from service.connectors.factory import make_clients
from service.logging import get_logger
from service.settings import Settings
from service.store import mapping_configs
from service.store.db import Database

log = get_logger(__name__)


SETTINGS_REFRESH_SECONDS = 2.0


@dataclass
class Assembly:
    engine: SyncEngine
    handlers: dict[str, Handler]
    close: Callable[[], Awaitable[None]]
    background: Callable[[Worker], list[Coroutine[Any, Any, None]]]


async def follow_settings(db: Database, engine: SyncEngine, worker: Worker) -> None:
    """Keep the rules and the hold states equal to what operators stored (polled: cheap and robust)."""
    while True:
        try:
            async with db.session() as session:
                rows = await mapping_configs.all_configs(session)
            for name, rule in engine.rules.items():
                row = rows.get(name)
                rule.mapping = effective(BY_NAME[name], mapping_configs.config_of(row))
                rule.unavailable, rule.bc_delivery = (row.unavailable, row.bc_delivery) if row else (None, None)
            await worker.apply_holds({name for name, row in rows.items() if row.on_hold})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not refresh mapping settings", error=str(exc)[:300])
        await asyncio.sleep(SETTINGS_REFRESH_SECONDS)


def assemble(settings: Settings, db: Database, broker: Broker, job_settings: JobSettings | None = None, *,
             tag: str | None = None) -> Assembly:
    """`tag`: the installation's integration tag (service/store/installation.py), carried by every Dataverse write."""
    bc, dv = make_clients(settings, tag)

    async def redrive(mapping: str, event_json: str) -> None:
        await broker.publish("", broker.topology.mapping_queue(mapping), event_json.encode(),
                             message_id=f"redrive-{mapping}", correlation_id="redrive")

    ctx = SyncContext(bc=bc, dv=dv, db=db, local_currency=settings.local_currency,
                      order_number_column=settings.order_number_column)
    engine = SyncEngine(ctx, redrive=redrive, concurrency=settings.worker_concurrency,
                        history_value_chars=settings.history_value_chars)
    handlers = dict(HANDLERS)
    handlers.update(dict.fromkeys(engine.rules, engine.handle))

    async def close() -> None:
        await bc.aclose()
        await dv.aclose()

    jobs = JobRunner(settings, db, broker, engine, bc, dv, job_settings)  # full sync, catch-up, subscription keeper

    budgets = [budget for budget in (bc.budget, dv.budget) if budget is not None]

    def background(worker: Worker) -> list[Coroutine[Any, Any, None]]:
        return [follow_settings(db, engine, worker), jobs.run(), share_budgets(db, budgets),
                trim_memory(settings.worker_memory_trim_seconds)]

    return Assembly(engine, handlers, close, background)
