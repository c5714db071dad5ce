"""Full synchronization in the worker: run the Ready lines of the latest run whose dependencies finished.

A line is claimed atomically on its own row (one worker wins) and leased; the lease is renewed with the
counts after every batch. Records are streamed page by page (the largest pages the
services allow) from the source side(s) of the mapping's direction and applied through the engine
(`kind="full"`), which matches before it creates: records present on both sides are coupled, not duplicated.
Matching costs no request per record: for a rule that matches by the mapping's keys, the side's key values and
then the other side's records sharing one are read by pages once, on the first record that needs a match
(`MatchIndex`, service/matching.py), and the engine's runs of the line consult it (`PREFETCHED`). Memory holds
one connector page, one batch, the source side's key values and the other side's records that match.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from consumers.errors import MappingHeld, RecordBusy
from consumers.jobs.common import record_event, source_sides
from consumers.jobs.settings import JobSettings
from consumers.rules.base import Rule
from consumers.rules.field_values import FieldValues
from consumers.sync import SyncEngine
from schemas.vocabulary import Result, Side
from service.connectors.http import is_transient
from service.logging import get_logger
from service.matching import PREFETCHED, Matcher, MatchIndex
from service.store import jobs, synclog
from service.store.db import Database

log = get_logger(__name__)
BUSY_RETRIES = 30


class LineLost(Exception):
    """The line was restarted (or taken) while this worker ran it: stop quietly."""


def worker_id() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FullSync:
    def __init__(self, db: Database, engine: SyncEngine, settings: JobSettings,
                 kick: Callable[[str], Awaitable[None]]) -> None:
        self.db, self.engine, self.settings, self.kick = db, engine, settings, kick
        self.owner = worker_id()
        self.wake = asyncio.Event()
        self.running: dict[int, asyncio.Task[None]] = {}

    async def tick(self) -> None:
        """Claim what can start now (up to `full_sync_lines` lines in this worker)."""
        async with self.db.session() as session:
            run = await jobs.latest_run(session)
            if run is None or run.id is None or run.finished_at is not None:
                return
            lines = await jobs.run_lines(session, run.id)
            on_hold = {line.mapping: (await jobs.mapping_config(session, line.mapping))[1] for line in lines}
        for line in jobs.runnable(lines):
            if len(self.running) >= self.settings.full_sync_lines:
                return
            if line.id is None or line.id in self.running or on_hold.get(line.mapping):
                continue  # a mapping on hold starts when it is resumed
            async with self.db.session() as session:
                attempt = await jobs.claim_line(session, line.id, self.owner, self.settings.line_lease_seconds)
            if attempt is None:
                continue
            task = asyncio.create_task(self.run_line(line.id, line.mapping, attempt, run.id))
            self.running[line.id] = task
            task.add_done_callback(functools.partial(self._done, line.id))

    def _done(self, line_id: int, _: object) -> None:
        self.running.pop(line_id, None)
        self.wake.set()

    async def stop(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_line(self, line_id: int, mapping: str, attempt: int, run_id: int) -> None:
        structlog.contextvars.bind_contextvars(mapping=mapping, full_sync_run=run_id)
        log.info("full sync line started", line=line_id, attempt=attempt)
        status, message = jobs.FINISHED, None
        try:
            rule = self.engine.rules.get(mapping)
            if rule is None:
                raise LookupError(f"{mapping} has no sync rule")
            for side in source_sides(rule):
                await self._side(rule, side, line_id, attempt, run_id)
        except LineLost:
            log.info("full sync line restarted elsewhere; stopped", line=line_id, attempt=attempt)
            return
        except MappingHeld:  # put on hold meanwhile: the line is given back and starts again on resume
            async with self.db.session() as session:
                await jobs.release_line(session, line_id, self.owner, attempt)
            log.info("full sync line stopped: its mapping was put on hold", line=line_id)
            return
        except asyncio.CancelledError:  # the worker stops: give the line back, another worker starts it again
            async with self.db.session() as session:
                await asyncio.shield(jobs.release_line(session, line_id, self.owner, attempt))
            raise
        except Exception as exc:
            status, message = jobs.ERROR, f"{type(exc).__name__}: {exc}"
            log.error("full sync line failed", line=line_id, error=message[:500])
        async with self.db.session() as session:
            await jobs.finish_line(session, line_id, self.owner, attempt, status, message)
        log.info("full sync line ended", line=line_id, status=status)
        await self.kick("full-sync")  # dependents may start now, in any worker

    async def _side(self, rule: Rule, side: str, line_id: int, attempt: int, run_id: int) -> None:
        index = match_index(rule, side)
        token = PREFETCHED.set(index)  # the line's runs (tasks started from here) match through it
        try:
            batch: list[dict[str, Any]] = []
            async for record in await self._records(rule, side):
                batch.append(record)
                if len(batch) >= self.settings.full_sync_batch:
                    await self._batch(rule, side, batch, line_id, attempt, run_id, index)
                    batch = []
            await self._batch(rule, side, batch, line_id, attempt, run_id, index)
        finally:
            PREFETCHED.reset(token)
        if index is not None and index.built:
            log.info("full sync side matched in memory", side=side, kept=index.kept)

    @staticmethod
    async def _records(rule: Rule, side: str) -> Any:
        """The side's records: the rule's own listing, by the largest pages the service allows when it is the
        plain one."""
        if getattr(rule.records, "__func__", None) is Rule.records:
            return Matcher(rule.mapping, rule.ctx.bc, rule.ctx.dv).listing(side)
        return await rule.records(side)

    async def _batch(self, rule: Rule, side: str, batch: list[dict[str, Any]], line_id: int, attempt: int,
                     run_id: int, index: MatchIndex | None = None) -> None:
        counts: Counter[str] = Counter()
        limit = asyncio.Semaphore(self.settings.full_sync_concurrency)

        async def one(record: dict[str, Any]) -> None:
            async with limit:
                result, other_id = await self._applied(rule, side, record, run_id)
                counts[result] += 1
                if index is not None and result == Result.INSERTED and other_id:
                    index.add(record, other_id)  # a later record whose key finds it sees it, as the server would

        await asyncio.gather(*(one(r) for r in batch))
        async with self.db.session() as session:
            ours = await jobs.progress(session, line_id, self.owner, attempt, counts, self.settings.line_lease_seconds)
        if not ours:
            raise LineLost(line_id)

    async def _record(self, rule: Rule, side: str, record: dict[str, Any], run_id: int) -> str:
        """How the record was applied: a line counter's name."""
        return (await self._applied(rule, side, record, run_id))[0]

    async def _applied(self, rule: Rule, side: str, record: dict[str, Any], run_id: int) -> tuple[str, str | None]:
        """How the record was applied (a line counter's name) and the id of its record on the other side."""
        record_id = rule.record_id(side, record)
        error: Exception | None = None
        for turn in range(BUSY_RETRIES):
            try:
                applied = await self.engine.sync_record(rule, side, record_id, record=record, kind="full")
                return applied.result, applied.other_id
            except RecordBusy as exc:  # a live event of the same record: wait for it
                error = exc
                await asyncio.sleep(min(0.1 * (turn + 1), 1.0))
            except IntegrityError as exc:  # the match was coupled by a concurrent record meanwhile: apply again
                error = exc
                if turn >= 2:
                    break
            except (asyncio.CancelledError, MappingHeld):
                raise
            except Exception as exc:  # listed in the error list, with an event to retry it
                error = exc
                break
        await self._error(rule, side, record_id, error, run_id)
        return "failed", None

    async def _error(self, rule: Rule, side: str, record_id: str, error: Exception | None, run_id: int) -> None:
        message = f"full synchronization: {type(error).__name__}: {error}"
        event = record_event(rule, side, record_id, dedupe_key=f"fullsync:{run_id}:{rule.name}:{side}:{record_id}",
                             correlation_id=f"fullsync-{run_id}")
        async with self.db.session() as session:
            await synclog.record_error(session, rule.name, Side(side).source, record_id, message,
                                       event=event.model_dump_json(), waiting_for=getattr(error, "waiting_for", None),
                                       transient=is_transient(error))
        log.warning("full sync record failed", side=side, record_id=record_id, error=message[:300])


def match_index(rule: Rule, side: str) -> MatchIndex | None:
    """An in-memory match index for the side's records when the rule matches by the mapping's keys (a rule with a
    `match` of its own, e.g. contacts within their account, matches per record as before)."""
    if not isinstance(rule, FieldValues) or type(rule).match is not FieldValues.match or not rule.mapping.match_keys:
        return None
    return MatchIndex(Matcher(rule.mapping, rule.ctx.bc, rule.ctx.dv), Side(side))
