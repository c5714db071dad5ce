"""The steady load every fault case runs under, and the check of what arrived.

A human works in both systems through the sandboxes' control endpoints (which no injected fault touches): in
Sales they create accounts and contacts under those accounts, in Business Central customers and items, and
between creations they update earlier records on their source side. Every record carries a unique key on
both sides (account/customer/item name, contact e-mail), so the check can count, per key, the records on
each side and the couplings, and compare the destination's fields — and the source's: the integration must never
write over the human — with the last value written at the source.

`Load.verify()` answers with a `Verdict`: which records are not (yet) at their final values at the
destination, which keys exist more than once on either side, which couplings are doubled. `Load.observe()`
(called by every verify, and every half second by the cases that ask for it) finds values set back: a side that
showed a record's newer value and later an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.e2e.stack import Stack

Json = dict[str, Any]
UNIT = "PCS"  # the base unit of the load's items; created and synchronized before the load starts


@dataclass(frozen=True)
class Kind:
    """One kind of record the load makes: where it is made, where it must arrive, which field is updated."""

    name: str
    origin: str  # "bc" | "dataverse": the side the human writes
    mapping: str
    bc_set: str
    dv_set: str
    bc_key: str  # the field holding the key on the BC side
    dv_key: str
    bc_field: str  # the field the updates change, on each side
    dv_field: str


KINDS = {k.name: k for k in (
    Kind("account", "dataverse", "CUSTOMER", "customers", "accounts", "displayName", "name", "phoneNumber",
         "telephone1"),
    Kind("customer", "bc", "CUSTOMER", "customers", "accounts", "displayName", "name", "phoneNumber", "telephone1"),
    Kind("item", "bc", "ITEM-PRODUCT", "items", "products", "displayName", "name", "unitPrice", "price"),
    # (API v2.0 contacts have no job title: the mobile phone is the field the updates change.)
    Kind("contact", "dataverse", "CONTACT", "contacts", "contacts", "email", "emailaddress1", "mobilePhoneNumber",
         "mobilephone"),
)}
# One round of the load: four creations and four updates (the updates go round the records made so far).
ROUND = ("account", "update", "customer", "update", "item", "update", "contact", "update")
UPDATE_ORDER = ("account", "customer", "item", "contact")


@dataclass
class Record:
    kind: Kind
    key: str
    source_id: str
    value: Any  # the last value the human wrote into the updated field (at the source)
    changes: int = 1  # the creation and every update
    last_change: float = 0.0  # time.monotonic() of the last change
    history: list[Any] = field(default_factory=list)  # every value written, in order (each one is unique)
    shown: dict[str, int] = field(default_factory=dict)  # side -> newest index of `history` seen there


@dataclass
class Verdict:
    """What `Load.verify` found: `missing` keys not (yet) at their final values at the destination, with why;
    `duplicated` keys present more than once on a side; `coupling_duplicates` records coupled more than once."""

    sent: int
    arrived: int
    missing: dict[str, str] = field(default_factory=dict)  # key -> why
    duplicated: dict[str, int] = field(default_factory=dict)  # "<side> <key>" -> records with that key
    coupling_duplicates: dict[str, int] = field(default_factory=dict)  # "<mapping> <side> <id>" -> couplings

    @property
    def lost(self) -> int:
        return self.sent - self.arrived

    @property
    def extra_records(self) -> int:
        """Records beyond the one each key should have, on both sides, plus doubled couplings."""
        return sum(n - 1 for n in self.duplicated.values()) + sum(n - 1 for n in self.coupling_duplicates.values())

    @property
    def complete(self) -> bool:
        return not self.missing and not self.duplicated and not self.coupling_duplicates


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float):
        return isinstance(actual, int | float) and abs(float(actual) - expected) < 1e-6
    return bool(actual == expected)


class Load:
    """A human in both systems making `rate` changes per second (see ROUND) until `stop()`."""

    def __init__(self, stack: Stack, tag: str, rate: float = 4.0) -> None:
        self.stack, self.tag, self.rate = stack, tag, rate
        self.records: list[Record] = []
        self.ops = 0
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One change at a time: a case's own edit (`touch`) and the load's must reach the sandbox in the order
        # their values are recorded, or the check would expect a value that an earlier write overtook.
        self._changing = asyncio.Lock()
        self.touches = 0
        self.setbacks: list[str] = []  # values seen replaced by older ones (see `observe`)
        self.looks = 0
        self.started_at = self.stopped_at = 0.0

    @property
    def sent(self) -> int:
        return sum(r.changes for r in self.records)

    def by_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind.name == kind]

    # ---- running --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.stopped_at = time.monotonic()

    async def _run(self) -> None:
        # A fixed timetable (not "sleep after each change") keeps the rate when a change takes a while.
        while not self._stop.is_set():
            step = ROUND[self.ops % len(ROUND)]
            try:
                async with self._changing:
                    await (self._update() if step == "update" else self._create(step))
            except Exception as exc:  # a human's change refused by the sandbox is a defect of the test
                self.errors.append(f"{step}: {type(exc).__name__}: {exc}"[:500])
            self.ops += 1
            delay = self.started_at + self.ops / self.rate - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(delay, 0.0))

    async def _create(self, kind_name: str) -> None:
        kind, n = KINDS[kind_name], len(self.by_kind(kind_name)) + 1
        key = f"F{self.tag} {kind_name} {n:03d}"
        bc, dv = self.stack.bc, self.stack.dv
        if kind_name == "account":
            value: Any = f"+1 555 {self.ops:04d}"
            source_id = await dv.create("accounts", {"name": key, "telephone1": value, "customertypecode": 3})
        elif kind_name == "customer":
            value = f"+44 20 {self.ops:04d}"
            source_id = (await bc.create("customers", {"displayName": key, "phoneNumber": value}))["id"]
        elif kind_name == "item":
            value = float(10 + self.ops)
            source_id = (await bc.create("items", {"displayName": key, "type": "Inventory", "unitPrice": value,
                                                   "baseUnitOfMeasureCode": UNIT}))["id"]
        else:  # a contact under the latest account made in Sales (its customer may not exist in BC yet)
            parent = self.by_kind("account")[-1]
            key = f"f{self.tag}.contact.{n:03d}@faults.example".lower()
            value = f"+1 557 {self.ops:04d}"
            source_id = await dv.create("contacts", {
                "firstname": "Fault", "lastname": f"Contact {n:03d}", "emailaddress1": key, "mobilephone": value,
                "parentcustomerid_account@odata.bind": f"/accounts({parent.source_id})"})
        self.records.append(Record(kind, key, str(source_id).lower(), value, last_change=time.monotonic(),
                                   history=[value]))

    async def _update(self) -> None:
        updates = self.ops // len(UPDATE_ORDER)  # how many updates came before this one (every other op)
        kind_name = UPDATE_ORDER[updates % len(UPDATE_ORDER)]
        candidates = self.by_kind(kind_name)
        if not candidates:
            return
        record = candidates[(updates // len(UPDATE_ORDER)) % len(candidates)]
        await self._change(record, self.ops)

    async def touch(self, record: Record) -> None:
        """An edit of `record` at its source now, besides the timetable (a case's own later edit, which must
        arrive like any other). Values from 9000 on: never one the load writes."""
        async with self._changing:
            self.touches += 1
            await self._change(record, 9000 + self.touches)

    async def _change(self, record: Record, n: int) -> None:
        bc, dv = self.stack.bc, self.stack.dv
        kind_name = record.kind.name
        if kind_name == "account":
            value: Any = f"+1 556 {n:04d}"
            await dv.update("accounts", record.source_id, {"telephone1": value})
        elif kind_name == "customer":
            value = f"+44 21 {n:04d}"
            await bc.patch("customers", record.source_id, {"phoneNumber": value})
        elif kind_name == "item":
            value = float(500 + n)
            await bc.patch("items", record.source_id, {"unitPrice": value})
        else:
            value = f"+1 558 {n:04d}"
            await dv.update("contacts", record.source_id, {"mobilephone": value})
        record.value, record.changes, record.last_change = value, record.changes + 1, time.monotonic()
        record.history.append(value)

    # ---- checking -------------------------------------------------------------------------------------
    async def rows(self) -> dict[tuple[str, str], list[Json]]:
        """Every row of the tables the load uses, by (side, set)."""
        bc, dv = self.stack.bc, self.stack.dv
        sets = {("bc", k.bc_set) for k in KINDS.values()} | {("dataverse", k.dv_set) for k in KINDS.values()}
        ordered = sorted(sets)
        fetched = await asyncio.gather(*(
            bc.query(name, top=100_000) if side == "bc" else dv.query(name) for side, name in ordered))
        return dict(zip(ordered, fetched, strict=True))

    async def couplings(self) -> dict[str, list[Json]]:
        """Every coupling of the mappings the load uses (admin API, paged)."""
        found: dict[str, list[Json]] = {}
        for mapping in sorted({k.mapping for k in KINDS.values()}):
            rows: list[Json] = []
            while True:
                after = rows[-1]["id"] if rows else 0
                response = await self.stack.admin(f"/admin/couplings?mapping={mapping}&limit=1000&after={after}")
                assert response.status_code == 200, response.text
                page = response.json()
                rows += page
                if len(page) < 1000:
                    break
            found[mapping] = rows
        return found

    def observe(self, rows: dict[tuple[str, str], list[Json]]) -> None:
        """One look at both sides: a record showing, on either side, a value older than one it showed at an
        earlier look was set back — an older version written over a newer one — even if a later write heals it
        before the end. Each value the load writes is unique, so its place in the record's history is known."""
        self.looks += 1
        for record in self.records:
            kind = record.kind
            for side, table, key_field, field_name in (("bc", kind.bc_set, kind.bc_key, kind.bc_field),
                                                      ("dataverse", kind.dv_set, kind.dv_key, kind.dv_field)):
                found = [r for r in rows[side, table] if _key(r.get(key_field)) == _key(record.key)]
                if len(found) != 1:
                    continue
                value = found[0].get(field_name)
                index = next((i for i, v in enumerate(record.history) if same(value, v)), None)
                if index is None:  # not there yet, or a change whose value is being recorded just now
                    continue
                newest = record.shown.get(side, -1)
                if index < newest:
                    setback = (f"{record.key} at {'BC' if side == 'bc' else 'Sales'}: "
                               f"{record.history[newest]!r} set back to {value!r}")
                    if setback not in self.setbacks:  # counted once, however many looks see it
                        self.setbacks.append(setback)
                record.shown[side] = max(newest, index)

    async def observe_until(self, stop: asyncio.Event, every: float = 0.5) -> None:
        """`observe` every `every` seconds until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a look that fails is only a look less
                self.observe(await self.rows())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def verify(self) -> Verdict:
        """Compare both systems with what the human did."""
        rows, coupled = await asyncio.gather(self.rows(), self.couplings())
        self.observe(rows)
        coupled_ids = {m: {str(r["bc_id"]).lower() for r in v} | {str(r["dataverse_id"]).lower() for r in v}
                       for m, v in coupled.items()}
        verdict = Verdict(sent=self.sent, arrived=0)
        for record in self.records:
            kind = record.kind
            on_bc = [r for r in rows["bc", kind.bc_set] if _key(r.get(kind.bc_key)) == _key(record.key)]
            on_dv = [r for r in rows["dataverse", kind.dv_set] if _key(r.get(kind.dv_key)) == _key(record.key)]
            for side, found in (("bc", on_bc), ("dataverse", on_dv)):
                if len(found) > 1:
                    verdict.duplicated[f"{side} {record.key}"] = len(found)
            destination, field_name = (on_dv, kind.dv_field) if kind.origin == "bc" else (on_bc, kind.bc_field)
            source, source_field = (on_bc, kind.bc_field) if kind.origin == "bc" else (on_dv, kind.dv_field)
            if not source:  # nothing the load does removes a record: only a delete by the integration could
                verdict.missing[record.key] = "gone from its source (deleted)"
            elif not same(source[0].get(source_field), record.value):  # the integration wrote over the human
                verdict.missing[record.key] = (f"{source_field} = {source[0].get(source_field)!r} at the source, "
                                               f"where the human wrote {record.value!r}")
            elif not destination:
                verdict.missing[record.key] = "not at the destination"
            elif not same(destination[0].get(field_name), record.value):
                verdict.missing[record.key] = (f"{field_name} = {destination[0].get(field_name)!r}, "
                                               f"expected {record.value!r}")
            elif record.source_id not in coupled_ids[kind.mapping]:
                verdict.missing[record.key] = "arrived but not coupled"
            else:
                verdict.arrived += record.changes
        for mapping, rows_of in coupled.items():
            for side in ("bc_id", "dataverse_id"):
                counts = Counter(str(r[side]).lower() for r in rows_of)
                verdict.coupling_duplicates |= {f"{mapping} {side} {k}": n for k, n in counts.items() if n > 1}
        return verdict

    async def census(self) -> dict[str, dict[str, int]]:
        """Per kind: the records the load made, and how many rows carrying their keys each side holds and how
        many of them are coupled (a record deleted on either side, or a coupling removed, shows here)."""
        rows, coupled = await asyncio.gather(self.rows(), self.couplings())
        out: dict[str, dict[str, int]] = {}
        for kind in KINDS.values():
            mine = {_key(r.key) for r in self.by_kind(kind.name)}
            on_bc = [r for r in rows["bc", kind.bc_set] if _key(r.get(kind.bc_key)) in mine]
            on_dv = [r for r in rows["dataverse", kind.dv_set] if _key(r.get(kind.dv_key)) in mine]
            pairs = {(str(c["bc_id"]).lower(), str(c["dataverse_id"]).lower()) for c in coupled[kind.mapping]}
            bc_ids = {str(r["id"]).lower() for r in on_bc}
            out[kind.name] = {"made": len(mine), "bc": len(on_bc), "dataverse": len(on_dv),
                              "coupled": sum(1 for b, _ in pairs if b in bc_ids)}
        return out

    async def notified(self) -> set[str]:
        """Keys whose last change reached the api and was answered 2xx (read from the sandboxes' delivery
        logs). Only these can be demanded before a catch-up: the others' webhooks failed (api or database
        down, dropped) and only a catch-up can bring them."""
        app_user = (await self.stack.dv.state())["application_user_id"]
        last_dv: dict[str, str] = {}  # record id -> outcome of the latest delivery of a human's change
        for delivery in await self.stack.dv.webhooks():
            if delivery.get("user_id") != app_user:
                last_dv[str(delivery.get("record_id")).lower()] = str(delivery.get("outcome"))
        accepted_bc: dict[str, str] = {}  # record id -> newest lastModifiedDateTime of an accepted notification
        for delivery in (await self.stack.bc.webhooks())["deliveries"]:
            if delivery.get("kind") != "notification" or not str(delivery.get("outcome")).startswith("2"):
                continue
            for entry in (delivery.get("body") or {}).get("value", []):
                record_id = str(entry.get("resource", "")).rsplit("(", 1)[-1].rstrip(")").lower()
                accepted_bc[record_id] = max(accepted_bc.get(record_id, ""), str(entry.get("lastModifiedDateTime")))
        rows = await self.rows()
        modified = {str(r["id"]).lower(): str(r.get("lastModifiedDateTime")) for k in KINDS.values()
                    if k.origin == "bc" for r in rows["bc", k.bc_set]}
        keys = set()
        for record in self.records:
            if record.kind.origin == "dataverse":
                if last_dv.get(record.source_id) == "delivered":
                    keys.add(record.key)
            elif _instant(accepted_bc.get(record.source_id)) >= _instant(modified.get(record.source_id)):
                keys.add(record.key)
        return keys


def _instant(stamp: str | None) -> float:
    """A BC timestamp (0-3 fractional digits) as seconds; missing = -1 (never notified)."""
    if not stamp or stamp == "None":
        return -1.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _key(value: Any) -> str:
    return str(value or "").strip().lower()
