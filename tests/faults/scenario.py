"""One fault case from start to verdict: prepare the stack, run the load, inject the fault, wait for the
recovery, check everything, and produce the case's row of docs/reliability.md.

Timeline of a case (seconds are test time):

    load starts ─ WARM ─▶ fault begins ─ (case) ─▶ fault ends ─ TAIL ─▶ load stops ─▶ … all changes present

Recovery time = from the fault's end until every change is at its destination with its final values; it
includes the TAIL seconds of load after the fault and the ordinary sync lag of their changes (`settle` is the
time from the load's last change, for comparison).

Two stages of checking keep the recovery mechanisms apart:
1. without any catch-up requested, every change whose webhook the api answered 2xx must arrive — what the
   service accepted is its own responsibility (outbox, broker, retries), never the catch-up's;
2. changes whose webhooks failed (api or database down, deliveries dropped) may need a catch-up; a case that
   allows it asks for one through the admin API (as the `BCSYNC_RECONCILE_MINUTES` schedule would later)
   or relies on the one the service triggers itself (subscription keeper, schedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx

from service.topology import Topology
from tests.conftest import BROKER_URL, SAMPLES
from tests.e2e.stack import Stack
from tests.faults.load import UNIT, Load, Verdict
from tests.harness import CLIENT_STATE, WEBHOOK_KEY

WARM = 4.0  # seconds of load before the fault
TAIL = 3.0  # seconds of load after it
QUIET = 2.0  # seconds without activity before the final count (late duplicates show up in it)
RETRY_DELAYS = "1,2,4,8,15"  # the retry budget compressed: 30 s instead of 12.6 min
# Every case's service settings: the compressed retries, jobs polled often, catch-up only when asked.
FAULT_ENV = {"BCSYNC_RETRY_DELAYS": RETRY_DELAYS, "BCSYNC_JOBS_POLL_SECONDS": "0.5", "BCSYNC_RECONCILE_MINUTES": "0"}
# BC's notification retries (1, 1, 1, 10, 100 minutes) compressed to 1.2, 3, 6, 15 and 30 s.
BC_RETRY_MINUTES = [0.02, 0.05, 0.1, 0.25, 0.5]


@dataclass
class Window:
    """When the fault was active (time.monotonic()), and what the case observed about it."""

    started: float = 0.0
    ended: float = 0.0
    notes: list[str] = field(default_factory=list)
    load: Load | None = field(default=None, repr=False)  # the case's load (set by run_case): faults that use it

    def begin(self) -> None:
        self.started = time.monotonic()

    def end(self) -> None:
        self.ended = time.monotonic()

    def note(self, text: str) -> None:
        self.notes.append(text)


Fault = Callable[[Stack, Window], Awaitable[None]]


@dataclass
class Row:
    """One line of the reliability table."""

    case: int
    name: str
    sent: int
    arrived: int
    duplicated: int
    lost: int
    accepted: int  # events the api stored and answered 202 for
    not_notified: int  # changes whose webhook never got a 2xx: only a catch-up could bring them
    dead_letters: int
    accepted_missing: int  # accepted changes still missing when only the service's own paths could bring them
    fault_seconds: float
    recovery_seconds: float | None  # None: never complete
    settle_seconds: float | None
    notes: list[str]
    finished_at: str
    # Messages left in the broker where nothing will take them (set by the cluster cases): stuck in a delay
    # queue that no longer dead-letters, or unacknowledged on a live channel that will never settle them.
    stranded: int = 0

    def json(self) -> dict[str, Any]:
        return asdict(self)


async def prepare(stack: Stack) -> None:
    """Register both systems' webhooks as an operator does (`POST /admin/setup`), compress BC's notification
    retries, and synchronize the unit the load's items use (so that the load measures records, not setup)."""
    await stack.bc.webhook_settings(retry_minutes=BC_RETRY_MINUTES)
    setup = await stack.admin("/admin/setup", "POST")
    assert setup.status_code == 200, setup.text
    await stack.bc.create("unitsOfMeasure", {"code": UNIT, "displayName": "Pieces"})
    await stack.wait_until(lambda: stack.dv.query("uomschedules", filter=f"name eq '{UNIT}'"), timeout=30,
                           message=f"unit group {UNIT} in Sales")


class Activity:
    """Is anything still moving? Outbox, mapping and delay queues, the sandboxes' pending deliveries."""

    def __init__(self, stack: Stack, broker_url: str = BROKER_URL) -> None:
        self.stack = stack
        self.broker_url = broker_url
        self.topology = Topology(stack.namespace, tuple(int(d) for d in RETRY_DELAYS.split(",")))
        self.connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> Activity:
        self.connection = await aio_pika.connect(self.broker_url)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        """A channel on the connection, connecting again when it broke (a cluster node behind a proxy died)."""
        if self.connection is None or self.connection.is_closed:
            self.connection = await aio_pika.connect(self.broker_url)
        try:
            return await self.connection.channel()
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):
            with contextlib.suppress(Exception):
                await self.connection.close()
            self.connection = await aio_pika.connect(self.broker_url)
            return await self.connection.channel()

    async def depth(self, queue: str) -> int:
        """Ready messages (AMQP's passive declare counts no unacknowledged ones)."""
        async with await self._channel() as channel:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0  # not declared (yet): nothing in it
            return declared.declaration_result.message_count or 0

    async def waiting_retries(self) -> int:
        """Retries in the wait queues, ready or held unacknowledged by a worker's relay until due
        (consumers/retry_waits.py): the passive declare would miss the held ones, rabbitmqctl counts both."""
        names = {self.topology.delay_queue(d) for d in self.topology.retry_delays}
        if self.broker_url != BROKER_URL:  # a cluster case: its own nodes; what they say is ready
            return sum([await self.depth(name) for name in names])
        listed = await asyncio.to_thread(subprocess.run, ["rabbitmqctl", "-q", "list_queues", "name", "messages"],
                                         capture_output=True, text=True, timeout=30)
        if listed.returncode != 0:  # rabbitmqctl refused: what the broker says is ready
            return sum([await self.depth(name) for name in names])
        counts = dict(line.split("\t", 1) for line in listed.stdout.splitlines() if "\t" in line)
        return sum(int(counts.get(name, "0") or 0) for name in names)

    async def dead_letters(self) -> int:
        return await self.depth(self.topology.dead_queue)

    async def idle(self) -> bool:
        try:
            status = await self.stack.admin("/admin/status")
        except Exception:  # the api is restarting
            return False
        if status.status_code != 200:
            return False
        body = status.json()
        if body["outbox_pending"] or any(m["queue_depth"] != 0 for m in body["mappings"]):
            return False
        try:
            if await self.waiting_retries():
                return False
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):  # the broker is away just now
            return False
        if (await self.stack.bc.state())["pendingNotifications"]:
            return False
        drained = await self.stack.http.post(f"{self.stack.dv.base}/webhooks/drain", params={"seconds": 0.05})
        return drained.status_code == 200


async def run_case(stack: Stack, case: int, name: str, fault: Fault, *, ask_catch_up: bool = False,
                   accepted_timeout: float = 45.0, heal_timeout: float = 45.0, rate: float = 4.0,
                   broker_url: str = BROKER_URL, window: Window | None = None, observe: bool = False) -> Row:
    """The whole case; returns its row (the caller asserts on it after recording it). Without a fault the load's
    changes settle within a few seconds: the timeouts are generous margins, after which what is missing is lost.
    `broker_url`: where the suite itself looks at the queues (the stack's broker, e.g. a cluster's proxy).
    `window`: the caller's, to look at the load afterwards (`window.load`) while the stack still runs.
    `observe`: look at both sides every half second for values set back (`Load.observe`; noted in the row)."""
    await prepare(stack)
    load = Load(stack, str(case), rate=rate)
    window = window or Window()
    window.load = load
    looked = asyncio.Event()
    observer = asyncio.create_task(load.observe_until(looked)) if observe else None
    try:
        row = await _run_case(stack, case, name, fault, load, window, ask_catch_up=ask_catch_up,
                              accepted_timeout=accepted_timeout, heal_timeout=heal_timeout, broker_url=broker_url)
    finally:
        looked.set()
        if observer is not None:
            await observer
    if observe and not load.setbacks:
        row.notes.append(f"both sides looked at {load.looks} times from the load's start to the end: no value set "
                         "back")
    return row


async def _run_case(stack: Stack, case: int, name: str, fault: Fault, load: Load, window: Window, *,
                    ask_catch_up: bool, accepted_timeout: float, heal_timeout: float, broker_url: str) -> Row:
    async with Activity(stack, broker_url) as activity:
        load.start()
        try:
            await asyncio.sleep(WARM)
            await fault(stack, window)
            assert window.started and window.ended, "the fault did not mark its window"
            await asyncio.sleep(TAIL)
        finally:
            await load.stop()
        assert not load.errors, f"the load's own changes failed: {load.errors}"
        # Stage 1: what the api accepted arrives without any catch-up.
        notified: set[str] = set()
        complete_at: float | None = None

        async def accepted_arrived() -> bool:
            nonlocal notified, complete_at
            verdict = await load.verify()
            if not verdict.missing and complete_at is None:
                complete_at = time.monotonic()
            if not await activity.idle():
                return False
            notified = await load.notified()
            return not (set(verdict.missing) & notified)

        accepted_missing: dict[str, str] = {}
        try:
            await stack.wait_until(accepted_arrived, timeout=accepted_timeout, interval=0.5,
                                   message="every accepted change at its destination, nothing moving")
        except AssertionError:  # counted in the row (and failed on by the test), then the healing goes on
            verdict = await load.verify()
            accepted_missing = {k: v for k, v in verdict.missing.items() if k in notified}
            window.note(f"accepted but missing after {accepted_timeout:.0f} s without catch-up: "
                        f"{dict(list(accepted_missing.items())[:5])}")
        # Stage 2: the changes no webhook brought.
        not_notified = sorted(r.key for r in load.records if r.key not in notified)
        if not_notified:
            window.note(f"{len(not_notified)} changed records never notified to the service (webhook failed)")
        if ask_catch_up and complete_at is None:
            requested = await stack.admin("/admin/catch-up", "POST")
            assert requested.status_code == 202, requested.text
            window.note("catch-up requested through the admin API once nothing was moving")

        async def everything_arrived() -> bool:
            nonlocal complete_at
            if (await load.verify()).missing:
                return False
            complete_at = complete_at or time.monotonic()
            return True

        with contextlib.suppress(AssertionError):  # what is still missing then is counted as lost
            await stack.wait_until(everything_arrived, timeout=heal_timeout, interval=0.5,
                                   message="every change at its destination")
        # Quiet, then count once more: a late redelivery or catch-up event must not have made a second record.
        with contextlib.suppress(AssertionError):
            await stack.wait_until(activity.idle, timeout=60, interval=0.5, message="nothing moving")
        await asyncio.sleep(QUIET)
        final = await load.verify()
        dead = await activity.dead_letters()
        dead_logged = len(stack.worker_log_events("event dead-lettered"))
    accepted = sum(int(e.get("new", 0)) for e in stack.api_log_events("webhook answered")
                   if e.get("outcome") == "accepted")
    errors = await stack.admin("/admin/errors")
    open_errors = [e for e in errors.json() if e.get("state") not in ("resolved", "dismissed")] \
        if errors.status_code == 200 else []
    if open_errors:
        window.note(f"{len(open_errors)} open entries in the error list: "
                    + "; ".join(str(e.get("message"))[:120] for e in open_errors[:3]))
    row = Row(case=case, name=name, sent=final.sent, arrived=final.arrived, duplicated=final.extra_records,
              lost=final.lost, accepted=accepted, not_notified=len(not_notified),
              dead_letters=max(dead, dead_logged), fault_seconds=round(window.ended - window.started, 1),
              accepted_missing=len(accepted_missing),
              recovery_seconds=None if complete_at is None else round(complete_at - window.ended, 1),
              settle_seconds=None if complete_at is None else round(max(complete_at - load.stopped_at, 0.0), 1),
              notes=window.notes,
              finished_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    row.notes = [*row.notes, *(_verdict_notes(final))]
    if load.setbacks:
        row.notes.append(f"{len(load.setbacks)} values set back (an older version written over a newer one, seen in "
                         f"{load.looks} looks at both sides): {load.setbacks[:5]}")
    return row


def _verdict_notes(verdict: Verdict) -> list[str]:
    notes = []
    if verdict.missing:
        notes.append(f"missing: {dict(list(verdict.missing.items())[:5])}")
    if verdict.duplicated:
        notes.append(f"duplicated: {dict(list(verdict.duplicated.items())[:5])}")
    if verdict.coupling_duplicates:
        notes.append(f"doubled couplings: {dict(list(verdict.coupling_duplicates.items())[:5])}")
    return notes


async def wait_for_log(read: Callable[[], list[dict[str, Any]]], predicate: Callable[[dict[str, Any]], bool],
                       after: int, timeout: float = 15.0) -> dict[str, Any]:
    """The first line past index `after` of a process log that satisfies `predicate` (polled every 10 ms: the
    api-kill case needs to act within milliseconds of the line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = read()
        for line in lines[after:]:
            if predicate(line):
                return line
        await asyncio.sleep(0.01)
    raise AssertionError(f"no matching log line within {timeout} s")



# ---- cases 10 and 11: forged webhooks, and proof that nothing was deleted or uncoupled ---------------------------

LOAD_SETS = {"customers", "items", "contacts", "accounts", "products"}  # the tables the load writes, both sides


def _ms_date(moment: float) -> str:
    return f"/Date({int(moment * 1000)})/"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def forged_dataverse_delete(logical_name: str, record_id: str) -> dict[str, Any]:
    """A Dataverse `Delete` message for `record_id` in the documented RemoteExecutionContext format: the sample
    `dataverse-contact-delete.json` (Target an EntityReference, a PreEntityImage with the last values) made about
    this table and record, with operation ids of its own (a new message, not a retry of one). Its user is the
    sample's salesperson, not the integration: the api takes it for a person's delete."""
    context: dict[str, Any] = json.loads((SAMPLES / "dataverse-contact-delete.json").read_text())
    operation, request, correlation = (str(uuid.uuid4()) for _ in range(3))
    reference = {**context["InputParameters"][0]["value"], "Id": record_id, "LogicalName": logical_name}
    image = context["PreEntityImages"][0]["value"]
    context.update({
        "InputParameters": [{"key": "Target", "value": reference}],
        "PreEntityImages": [{"key": "PreImage", "value": {
            **image, "Id": record_id, "LogicalName": logical_name,
            "Attributes": [{"key": f"{logical_name}id", "value": record_id}]}}],
        "PrimaryEntityId": record_id, "PrimaryEntityName": logical_name, "MessageName": "Delete",
        "OperationId": operation, "RequestId": request, "CorrelationId": correlation,
        "OperationCreatedOn": _ms_date(time.time()),
        "OwningExtension": {**context["OwningExtension"], "Name": f"bcsync: Delete of {logical_name}"},
    })
    return context


async def post_dataverse(stack: Stack, context: dict[str, Any]) -> httpx.Response:
    """Post a RemoteExecutionContext to the api's Dataverse door as Dataverse does (HttpHeader auth: the key in
    our header; Dataverse's own headers)."""
    return await stack.http.post(f"{stack.api_url}/webhooks/dataverse", json=context, headers={
        "x-bcsync-webhook-key": WEBHOOK_KEY, "x-ms-dynamics-organization": "unq4f1c6a532f0e4d7e9a617c2d35e0",
        "x-ms-dynamics-entity-name": context["PrimaryEntityName"], "x-ms-dynamics-request-name":
        context["MessageName"], "x-ms-correlation-request-id": context["CorrelationId"]})


def bc_notification(subscription_id: str, company_id: str, entity_set: str, record_id: str | None,
                    change_type: str) -> dict[str, Any]:
    """One Business Central notification in the documented format (`bc-notifications.json`): a record's
    (`customers(<id>)`) or, for `collection`, the entity set's without a filter (the one that asks for a full
    reconciliation). Carries our clientState: whoever posts it knows the secret."""
    resource = (f"api/v2.0/companies({company_id})/{entity_set}({record_id})" if record_id
                else f"/api/v2.0/companies({company_id})/{entity_set}")
    return {"subscriptionId": subscription_id, "clientState": CLIENT_STATE,
            "expirationDateTime": _iso(time.time() + 3 * 86400), "resource": resource, "changeType": change_type,
            "lastModifiedDateTime": _iso(time.time())}


async def post_bc(stack: Stack, entries: list[dict[str, Any]]) -> httpx.Response:
    """Post notifications to the api's Business Central door with BC's headers."""
    return await stack.http.post(f"{stack.api_url}/webhooks/business-central", json={"value": entries}, headers={
        "clientRequestId": str(uuid.uuid4()), "x-ms-correlation-id": str(uuid.uuid4())})


async def bc_subscription_ids(stack: Stack) -> dict[str, str]:
    """Entity set -> the id of the subscription setup made for it (a forged notification names a real one)."""
    subscriptions = (await stack.bc.webhooks())["subscriptions"]
    ids = {str(s.get("resource", "")).rsplit("/", 1)[-1]: str(s["subscriptionId"]) for s in subscriptions}
    assert ids, "setup registered no BC subscription"
    return ids


class CouplingWatch:
    """Every coupling of the load's mappings seen during a case, by its id: one that is gone at the end, or
    holds another pair, was removed (a coupling removed and made again gets a new id)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], tuple[str, str]] = {}

    @staticmethod
    async def current(load: Load) -> dict[tuple[str, int], tuple[str, str]]:
        return {(mapping, int(r["id"])): (str(r["bc_id"]).lower(), str(r["dataverse_id"]).lower())
                for mapping, rows in (await load.couplings()).items() for r in rows}

    async def look(self, load: Load) -> None:
        self.seen |= await self.current(load)

    async def removed(self, load: Load) -> list[str]:
        now = await self.current(load)
        return [f"{mapping} #{number} {pair[0]}/{pair[1]}" for (mapping, number), pair in sorted(self.seen.items())
                if now.get((mapping, number)) != pair]


async def integrity(stack: Stack, load: Load, watch: CouplingWatch) -> list[str]:
    """What cases 10 and 11 add to the acceptance, as problems (empty: none): every record the load made is
    there once on both sides and coupled (counted at the sandboxes), no coupling seen during the case was
    removed, neither system's API served a delete of the load's tables, and no worker removed a coupling."""
    problems: list[str] = []
    census = await load.census()
    for kind, counts in census.items():
        made = counts["made"]
        if not counts["bc"] == counts["dataverse"] == counts["coupled"] == made:
            problems.append(f"{kind}: {made} made, {counts['bc']} at BC, {counts['dataverse']} in Sales, "
                            f"{counts['coupled']} coupled")
    removed = await watch.removed(load)
    if removed:
        problems.append(f"{len(removed)} couplings removed: {removed[:5]}")
    deletes = [f"BC {r['method']} {r['path']} {r['status']}" for r in await stack.bc.requests()
               if r.get("method") == "DELETE" and _names_load_set(str(r.get("path")))]
    deletes += [f"Dataverse {r['method']} {r['path']} {r['status']}" for r in await stack.dv.requests()
                if r.get("method") == "DELETE" and _names_load_set(str(r.get("path")))]
    if deletes:
        problems.append(f"{len(deletes)} deletes served by the systems' APIs: {deletes[:5]}")
    uncoupled = [e for e in stack.worker_log_events() if e.get("event") == "coupling removed after a delete"
                 or "coupling was removed" in str(e.get("reason", ""))]
    if uncoupled:
        problems.append(f"{len(uncoupled)} worker log lines of a removed coupling: "
                        f"{[(e.get('mapping'), e.get('record_id')) for e in uncoupled[:5]]}")
    return problems


def census_note(census: dict[str, dict[str, int]]) -> str:
    return "at the end, per kind made / at BC / in Sales / coupled: " + ", ".join(
        f"{kind} {c['made']}/{c['bc']}/{c['dataverse']}/{c['coupled']}" for kind, c in census.items())


def _names_load_set(path: str) -> bool:
    tail = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail.split("(", 1)[0] in LOAD_SETS
