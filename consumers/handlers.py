"""The handler registry: mapping name → the coroutine that applies one change event.

A plain dict. The worker puts the sync engine's handler in for every mapping that has a rule
(consumers/rules); the others use `log_event`, which only records that the event arrived.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schemas.events import ChangeEvent
from schemas.mappings import MAPPINGS, TableMapping
from service.logging import get_logger

log = get_logger(__name__)

Handler = Callable[[TableMapping, ChangeEvent], Awaitable[None]]


async def log_event(mapping: TableMapping, event: ChangeEvent) -> None:
    log.info(
        "event logged; this mapping has no sync rule yet", mapping=mapping.name, source=event.source,
        entity=event.entity, record_id=event.record_id, change_type=event.change_type, dedupe_key=event.dedupe_key,
    )


HANDLERS: dict[str, Handler] = {m.name: log_event for m in MAPPINGS}


def register(mapping_name: str) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        HANDLERS[mapping_name] = handler
        return handler

    return decorate
