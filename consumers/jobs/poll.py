"""Polling of the BC side of mappings that BC cannot notify (`mapping_config.bc_delivery` = "poll").

BC sends webhooks only for the resources it lists in `webhookSupportedResources` ("Working with webhooks in
Dynamics 365 Business Central": `contacts` and `salespeoplePurchasers` are not in its documented list; setup
asks the live environment and polls what it does not list, or what refuses a subscription). Such a side is
read every `BCSYNC_BC_POLL_SECONDS` (default 60 s) by `lastModifiedDateTime` from its own watermark minus the
catch-up overlap (BC sets the time on the server, with variable fractional seconds), and each changed record
becomes an ordinary change event through the outbox — exactly as the catch-up publishes, and with the same
dedupe keys, so a record version found by both is published once. A read by modified time sees no deletes:
every `BCSYNC_BC_POLL_FULL_EVERY`th poll (default 10) also lists the side's ids only (`$select=id`, pages of
20,000: a request or two) and publishes an event for each coupled record missing from the list — coupled
before the listing began — which the engine reads again: gone (404), the delete policy runs. One worker polls
a mapping at a time (lease `job:poll:<mapping>`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from consumers.jobs.catchup import CatchUpJob
from consumers.jobs.common import record_event
from consumers.rules.base import Rule
from service.logging import get_logger
from service.store import couplings, jobs, locks, outbox
from service.store.outbox import aware, utcnow

log = get_logger(__name__)
LEASE_SECONDS = 300.0


class PollJob:
    def __init__(self, catch_up: CatchUpJob) -> None:
        self.catch_up = catch_up  # its change reader, store and settings
        self.db = catch_up.db
        self.interval = catch_up.job_settings.bc_poll_seconds
        self.full_every = catch_up.job_settings.bc_poll_full_every

    def polled(self) -> list[Rule]:
        """The rules whose BC side is a source and is polled."""
        return [rule for rule in self.catch_up.engine.rules.values()
                if rule.bc_delivery == "poll" and not rule.unavailable and rule.mapping.bc_is_source]

    async def tick(self) -> None:
        if self.interval <= 0:
            return
        now = utcnow()
        for rule in self.polled():
            async with self.db.session() as session:
                state = await jobs.catch_up_state(session, rule.name)
                due = state.polled_at is None or aware(state.polled_at) + timedelta(seconds=self.interval) <= now
            if due:
                await self.poll(rule)

    async def poll(self, rule: Rule) -> int | None:
        """One read of the mapping's BC changes; the events published (None: another worker polls it)."""
        owner, key = uuid.uuid4().hex, f"job:poll:{rule.name}"
        async with self.db.session() as session:
            if not await locks.acquire(session, [key], owner, LEASE_SECONDS):
                return None
        started = utcnow()
        try:
            async with self.db.session() as session:
                state = await jobs.catch_up_state(session, rule.name)
                mark, polls = state.poll_watermark, state.polls + 1
            since = await self.catch_up.since(rule, "bc", mark, self.interval / 60)
            found, newest = await self.catch_up.publish_changes(rule, "bc", since, f"poll-{rule.name}")
            if self.full_every and polls % self.full_every == 0:
                found += await self.find_deletes(rule)
            async with self.db.session() as session:
                state = await jobs.catch_up_state(session, rule.name)
                state.poll_watermark, state.polled_at, state.polls, state.poll_error = newest, started, polls, None
            if found:
                log.info("BC changes polled", mapping=rule.name, events=found)
            return found
        except Exception as exc:
            log.error("BC poll failed", mapping=rule.name, error=str(exc)[:500])
            async with self.db.session() as session:
                state = await jobs.catch_up_state(session, rule.name)
                state.polled_at, state.poll_error = started, f"{type(exc).__name__}: {exc}"[:2000]
            return None
        finally:
            async with self.db.session() as session:
                await locks.release(session, [key], owner)


    async def find_deletes(self, rule: Rule) -> int:
        """Events for the coupled BC records the side no longer lists (the engine confirms each by reading it)."""
        started = utcnow()
        mapping = rule.mapping
        present = {str(row["id"]).lower() async for row in rule.ctx.bc.list(
            mapping.bc_entity, api=mapping.bc_api, select=["id"], page_size=20000)}
        events, after = [], 0
        while True:
            async with self.db.session() as session:
                batch = await couplings.list_for(session, rule.name, limit=500, after_id=after)
            if not batch:
                break
            after = batch[-1].id or after
            events += [record_event(rule, "bc", c.bc_id, dedupe_key=f"gone:{rule.name}:{c.bc_id}:{started.isoformat()}",
                                    correlation_id=f"poll-{rule.name}")
                       for c in batch if c.bc_id.lower() not in present and aware(c.created_at) < started]
        if events:
            async with self.db.session() as session:
                await outbox.store_events(session, events)
            log.info("coupled BC records no longer listed; checking them", mapping=rule.name, records=len(events))
        return len(events)
