"""Read a Business Central notification batch while it streams in, one entry at a time, keeping what it can use.

BC posts the notifications of every subscription at one notificationUrl in one body (`{"value": [...]}`, up
to about 1,000 entries per subscription before it sends one `collection` entry instead), and deletes every
subscription at that URL when the answer is a 4xx other than 408/429. So a batch is never refused for its
size or for one bad entry: the body is parsed incrementally (ijson's yajl C backend, push interface), each
entry is validated on its own (the `Notification` model, then `business_central_event`), and what had to be
dropped is counted with its reason and, when its resource parses, its entity set (for the catch-up).

A wrong clientState answers the whole request 401 with nothing stored, and is found as early as the format
allows: each entry's `clientState` member is checked as soon as its value is parsed (before the rest of the
entry, also in an entry being skipped for its size or count), and reading stops there, so the rest of the
body is never read or parsed.

Memory is bounded: the body is read up to `max_body_bytes`, at most `max_entries` entries are read, and an
entry is built only up to about `max_entry_bytes` (what its keys and strings decode to, plus a few bytes per
token). ijson's prefix-tracking interfaces (items, parse) keep the path of every open container, which costs
memory quadratic in the nesting depth (a 20,000-deep body took 1 GB): this reader takes `basic_parse` events
and counts the depth itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import ijson
from ijson.common import ObjectBuilder
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from schemas.business_central import Notification, ResourceError, parse_resource
from schemas.events import ChangeEvent
from service.api.deps import secret_matches
from service.intake import business_central_event

REASONS_KEPT = 5  # reasons quoted in the log line of a request
_YIELD_EVERY = 256 * 1024  # bytes parsed between two turns given to the other requests
_TOKEN_COST = 4  # what a token adds to an entry's size besides its text (quotes, separators)
_STEPS = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}  # depth changes
_ENDS = ("end_map", "end_array")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 * 1024 * 1024  # read no further; what was read is used
    # BC sends about 1,000 per subscription (ten at one URL today): twice that. Held as events at the limit:
    # about 37 MB (1.9 kB an event); what lies beyond is caught up.
    max_entries: int = 20_000
    max_entry_bytes: int = 16 * 1024  # a real entry is about 400 bytes


LIMITS = Limits()


@dataclass
class Reading:
    """What one request's body held."""

    events: list[ChangeEvent] = field(default_factory=list)
    authenticated: int = 0  # entries carrying our clientState
    wrong_client_state: bool = False  # an entry carries another one: the request is refused (401)
    dropped: Counter[str] = field(default_factory=Counter)  # reason → entries (a broken body counts once)
    reasons: list[str] = field(default_factory=list)  # the first few, for the log
    dropped_entities: set[tuple[str, str]] = field(default_factory=set)  # (company id, entity set) of drops
    dropped_unknown: bool = False  # something was lost whose entity set is not known
    body_bytes: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class NotificationReader:
    """Push parser of one batch: `feed` the body's chunks as they come, then `close`.

    Levels: the batch object's members sit at level 1, the entries of its `value` array at level 2, what is
    inside an entry at 3 and deeper. A container's start and end events sit at the level of the container.
    """

    def __init__(self, client_state: str | None, correlation_id: str, limits: Limits = LIMITS) -> None:
        self.reading = Reading()
        self.stopped = False
        self._client_state, self._correlation_id, self._limits = client_state, correlation_id, limits
        self._events = ijson.sendable_list()
        # use_float: BC sends no numbers; yajl's own conversion refuses a huge integer as a parse error
        # (without it, ijson 3.6 raised SystemError on a 5,000-digit integer).
        self._parser = ijson.basic_parse_coro(self._events, use_float=True)
        self._depth = 0
        self._key: str | None = None  # the batch member being read
        self._in_value = False
        self._entries = 0
        self._entry: ObjectBuilder | None = None  # None between entries and while skipping one
        self._entry_size = 0
        self._state_next = False  # the next value at level 3 is an entry's clientState

    def feed(self, chunk: bytes) -> bool:
        """Parse the next chunk; False once nothing more needs reading."""
        if self.stopped:
            return False
        if not chunk:  # starlette ends a body with b"", which ijson would take for the end of the input
            return True
        room = self._limits.max_body_bytes - self.reading.body_bytes
        over = len(chunk) > room
        chunk = chunk[:room] if over else chunk
        self.reading.body_bytes += len(chunk)
        self._parse(chunk)
        if over and not self.stopped:
            self._break("body_too_large", f"body over {self._limits.max_body_bytes} bytes: read no further")
        return not self.stopped

    def cut_short(self, reason: str, detail: str) -> None:
        """The body ended before its end (the client left)."""
        if not self.stopped:
            self._break(reason, detail)

    def close(self) -> Reading:
        """The end of the body: what it held."""
        if not self.stopped:
            self._parse(None)
        return self.reading

    # ---- parsing ----------------------------------------------------------------------------------------------

    def _parse(self, chunk: bytes | None) -> None:
        """Parse a chunk, or (None) the end of the input, and take the events it gave."""
        try:
            if chunk is None:
                self._parser.close()
            else:
                self._parser.send(chunk)
        except ijson.JSONError as exc:
            self._take()  # the events before the error are sound
            if self.stopped:
                return
            if chunk is not None:
                self._break("not_json", "not JSON: " + str(exc).split("\n", 1)[0][:100])
            else:  # yajl's "premature EOF"
                self._break("body_truncated", "the body breaks off" if self.reading.body_bytes else "empty body")
        except Exception as exc:  # yajl2_c fails oddly on some inputs; none of its events are trusted then
            self._events.clear()
            self._break("not_json", f"not JSON ({type(exc).__name__})")
        else:
            self._take()

    def _take(self) -> None:
        limit = self._limits.max_entry_bytes
        for event, value in self._events:
            step = _STEPS.get(event, 0)
            if step < 0:
                self._depth -= 1
            level = self._depth
            if step > 0:
                self._depth += 1
            if (level == 3 and (self._state_next or value == "clientState") and self._in_value
                    and self._client_state_refused(event, value)):
                break
            entry = self._entry
            if level > 2 and entry is not None:  # the hot path: inside an entry being built
                self._entry_size += _TOKEN_COST + (len(value) if value.__class__ is str else 0)
                if self._entry_size <= limit:
                    entry.event(event, value)
                    continue
            self._on(level, event, value)
            if self.stopped:
                break
        self._events.clear()

    def _client_state_refused(self, event: str, value: Any) -> bool:
        """Watch an entry's members (level 3) for `clientState`; True (and the reading stopped) as soon as its
        value is not ours. A null one is no clientState at all (the entry is dropped when it ends)."""
        if self._state_next:
            self._state_next = False
            if event == "null" or (event == "string" and secret_matches(value, self._client_state)):
                return False
            self.reading.wrong_client_state = True
            self.stopped = True  # the answer is 401 whatever follows
            self._entry = None
            return True
        if event == "map_key" and value == "clientState":
            self._state_next = True
        return False

    def _on(self, level: int, event: str, value: Any) -> None:
        if level >= 2:
            if self._in_value:
                self._on_entry(level, event, value)
            return  # inside another member of the batch object: not ours to read
        if level == 1:
            self._on_member(event, value)
        elif event not in ("start_map", "end_map"):
            self._break("not_a_batch", 'not a notification batch ({"value": [...]})')

    def _on_member(self, event: str, value: Any) -> None:
        if event == "map_key":
            self._key = value
        elif self._key == "value":
            if event == "start_array":
                self._in_value = True
            elif event == "end_array":
                self._in_value = False
            else:
                self._break("not_a_batch", '"value" is not an array')

    def _on_entry(self, level: int, event: str, value: Any) -> None:
        if level > 2:  # inside an entry: one that went over the size limit just now, or one being skipped
            if self._entry is not None:
                self._entry = None
                self._lost("entry_too_large", f"an entry over {self._limits.max_entry_bytes} bytes")
            return
        if event in _ENDS:  # the end of an entry (or of one being skipped)
            if self._entry is not None:
                self._entry.event(event, value)
                entry, self._entry = self._entry.value, None
                self._finish(entry)
            return
        self._entries += 1
        if self._entries > self._limits.max_entries:
            self._lost("too_many_entries", f"entries past the first {self._limits.max_entries}")
        elif event == "start_map":
            self._entry, self._entry_size = ObjectBuilder(), 0
            self._entry.event(event, value)
        else:
            self._lost("not_an_object", "an entry that is not an object")

    # ---- one entry --------------------------------------------------------------------------------------------

    def _finish(self, entry: dict[str, Any]) -> None:
        state = entry.get("clientState")
        if state is None:  # cannot be ours, cannot be refused as someone else's either
            self._drop(entry, "no_client_state", "an entry without clientState")
            return
        if not (isinstance(state, str) and secret_matches(state, self._client_state)):
            self.reading.wrong_client_state = True
            self.stopped = True  # the answer is 401 whatever follows
            return
        self.reading.authenticated += 1
        try:
            notification = Notification.model_validate(entry)
            self.reading.events.append(business_central_event(notification, correlation_id=self._correlation_id))
        except ValueError as exc:  # ValidationError, or a resource that does not parse
            self._drop(entry, "malformed", _first_error(exc))

    def _drop(self, entry: dict[str, Any], reason: str, detail: str) -> None:
        entity = _entity_of(entry)
        if entity is None:
            self._lost(reason, detail)
            return
        self.reading.dropped_entities.add(entity)
        self._count(reason, f"{entity[1]}: {detail}")

    def _lost(self, reason: str, detail: str) -> None:
        """A drop whose entity set is not known."""
        self.reading.dropped_unknown = True
        self._count(reason, detail)

    def _break(self, reason: str, detail: str) -> None:
        """The rest of the body is lost (an entry being read with it)."""
        self.stopped = True
        self._entry = None
        self._lost(reason, detail)

    def _count(self, reason: str, detail: str) -> None:
        self.reading.dropped[reason] += 1
        if len(self.reading.reasons) < REASONS_KEPT:
            self.reading.reasons.append(detail[:200])


def _entity_of(entry: dict[str, Any]) -> tuple[str, str] | None:
    resource = entry.get("resource")
    if not isinstance(resource, str) or len(resource) > 4096:
        return None
    try:
        parsed = parse_resource(resource)
    except ResourceError:
        return None
    return parsed.company_id, parsed.entity_set


def _first_error(exc: ValueError) -> str:
    """One line on what is wrong, never the input (it may hold the clientState)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


async def read_notifications(stream: AsyncIterator[bytes], client_state: str | None, correlation_id: str,
                             limits: Limits = LIMITS) -> Reading:
    """Read a request body (`request.stream()`) as a notification batch; stops early when nothing more can
    change the answer (a wrong clientState, a body that is not a batch, the size limit)."""
    reader = NotificationReader(client_state, correlation_id, limits)
    since_yield = 0
    try:
        async for chunk in stream:
            if not reader.feed(chunk):
                break
            since_yield += len(chunk)
            if since_yield >= _YIELD_EVERY:  # a large body must not hold the event loop for seconds
                since_yield = 0
                await asyncio.sleep(0)
    except ClientDisconnect:  # noted by the BodyLimit middleware; what arrived is still used
        reader.cut_short("body_truncated", "the client left before sending its whole body")
    return reader.close()
