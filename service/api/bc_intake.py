"""Store what a Business Central batch delivered, and ask for a catch-up of what it could not.

An entry the door had to drop (malformed, over a limit, lost with a broken body) still named a change; the
catch-up of the mappings that use its entity set finds it again from BC (records modified since the
mapping's watermark). When the entity set of a drop is not known, every mapping with a BC entity set is
caught up. The events and the catch-up request are committed together, before the 202.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME, mappings_for
from service.api.admin_jobs import kick
from service.api.bc_notifications import Reading
from service.broker import Broker
from service.intake_writer import IntakeWriter
from service.logging import get_logger
from service.relay import OutboxRelay
from service.store import jobs, outbox
from service.store.db import Database

log = get_logger(__name__)

SOURCE = "business_central"
KICK_SECONDS = 2.0  # waking the workers is a courtesy (they poll the store): never hold the answer long


def catch_up_for(reading: Reading, company: str | None) -> list[str]:
    """Mappings (in dependency order) that must catch up on what `reading` dropped. Drops of another
    company's or of an unused entity set need none: they would have been ignored anyway."""
    if reading.dropped_unknown:
        names = {name for name, mapping in BY_NAME.items() if mapping.bc_entities}
    else:
        names = {
            mapping.name
            for entity_company, entity_set in reading.dropped_entities
            if not company or entity_company == company
            for mapping in mappings_for(SOURCE, entity_set)
        }
    return [name for name in jobs.catch_up_mappings() if name in names]


class BcIntake:
    def __init__(self, writer: IntakeWriter, db: Database, relay: OutboxRelay, broker: Broker) -> None:
        self.writer, self.db, self.relay, self.broker = writer, db, relay, broker

    async def store(self, events: list[ChangeEvent], catch_up: list[str]) -> int:
        """Store the events (deduplicated) and request the catch-ups, durably; returns how many events were
        new. Raises when not stored."""
        if not catch_up:
            stored = await self.writer.store(events)  # the usual case: group commit with concurrent requests
        else:
            async with self.db.session() as session:  # one transaction: both or neither
                stored = sum(await outbox.store_events(session, events))
                await jobs.request_catch_up(session, catch_up)
        if stored:
            self.relay.kick()
        if catch_up:
            try:
                await asyncio.wait_for(kick(self.broker, "catch-up"), KICK_SECONDS)
            except TimeoutError:
                log.warning("catch-up not signalled in time; the workers poll for it", mappings=catch_up)
        return stored


async def bc_intake(request: Request) -> BcIntake:
    state = request.app.state
    return BcIntake(state.writer, state.db, state.relay, state.broker)


BcIntakeDep = Annotated[BcIntake, Depends(bc_intake)]
