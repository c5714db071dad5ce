"""Put the sync engine together for a worker process: clients, rules, engine, handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from consumers.handlers import HANDLERS, Handler
from consumers.rules import build_rules
from consumers.rules.context import SyncContext
from consumers.sync import SyncEngine
from service.broker import Broker
from service.connectors.factory import make_clients
from service.settings import Settings
from service.store.db import Database


@dataclass
class Assembly:
    engine: SyncEngine
    handlers: dict[str, Handler]
    close: Callable[[], Awaitable[None]]


def assemble(settings: Settings, db: Database, broker: Broker) -> Assembly:
    bc, dv = make_clients(settings)
    engine = SyncEngine(db, {})

    async def redrive(mapping: str, event_json: str) -> None:
        await broker.publish("", broker.topology.mapping_queue(mapping), event_json.encode(),
                             message_id=f"redrive-{mapping}", correlation_id="redrive")

    ctx = SyncContext(bc=bc, dv=dv, db=db, local_currency=settings.local_currency,
                      sync_dependency=engine.sync_dependency)
    engine.rules = build_rules(ctx)
    engine.redrive = redrive
    handlers = dict(HANDLERS)
    handlers.update(dict.fromkeys(engine.rules, engine.handle))

    async def close() -> None:
        await bc.aclose()
        await dv.aclose()

    return Assembly(engine, handlers, close)
