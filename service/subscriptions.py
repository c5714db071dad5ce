"""The subscription keeper's one pass (run by a worker every few minutes, or by `POST
/admin/subscriptions/refresh`): renew the BC subscriptions well before their 3-day expiry, re-create
those BC deleted, check the Dataverse registration, store what it saw, and ask for a catch-up of the
mappings whose subscription had to be re-created (the changes made while it was missing were never
notified).

It maintains what `bcsync setup` registered, for the mappings setup found able to run (`plan`): BC
subscriptions for those whose BC side is pushed, the Dataverse steps of their tables. One API route that
answers 404 (the custom API uninstalled) fails only its own subscriptions; a resource whose subscription BC
refuses is polled from then on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.mappings import MAPPINGS, TableMapping, bc_resources, dataverse_tables
from service.connectors.business_central import V2, BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.http import NotFound
from service.logging import get_logger
from service.registration import (
    MESSAGES,
    RegistrationReport,
    bc_resource,
    register_bc_subscriptions,
    register_dataverse_webhook,
    same_resource,
)
from service.settings import Settings
from service.store import jobs, locks, mapping_configs
from service.store.db import Database

log = get_logger(__name__)

WEBHOOK_NAME = "bcsync"
KEEPER_LEASE_SECONDS = 300.0


class KeeperBusy(Exception):
    """Another process holds the `job:keeper` lease (a worker's keeper pass, a refresh or a setup)."""


@asynccontextmanager
async def keeper_lease(db: Database, wait_seconds: float) -> AsyncIterator[None]:
    """Hold the `job:keeper` lease for a registration pass, waiting up to `wait_seconds` for it. Setup, the
    workers' keeper and a refresh all create Dataverse steps and BC subscriptions after looking for them: two at
    once would both find none and both create one (two steps for a table: every change delivered twice)."""
    owner = uuid.uuid4().hex
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        async with db.session() as session:
            if await locks.acquire(session, [jobs.KEEPER_LEASE], owner, KEEPER_LEASE_SECONDS):
                break
        if asyncio.get_running_loop().time() > deadline:
            raise KeeperBusy("the subscription keeper is registering webhooks right now; try again")
        await asyncio.sleep(0.5)
    try:
        yield
    finally:
        async with db.session() as session:
            await locks.release(session, [jobs.KEEPER_LEASE], owner)


@dataclass
class Plan:
    """What to keep registered: the mappings that run (setup's findings), and those whose BC side is pushed."""

    running: list[TableMapping]
    pushed: list[TableMapping]
    undecided: list[str] = field(default_factory=list)  # pushed before setup decided push or poll

    def bc_resources(self) -> list[tuple[str, str]]:
        return bc_resources(self.pushed)

    def dataverse_steps(self) -> list[tuple[str, str, list[str] | None]]:
        return [(table, message, None) for table in dataverse_tables(self.running) for message in MESSAGES]


def refused_mappings(company_id: str, pushed: list[TableMapping], refused: list[str]) -> list[TableMapping]:
    """The pushed mappings one of whose BC resources BC refused to subscribe (while others got through)."""
    keys = {same_resource(r) for r in refused}
    return [m for m in pushed
            if any(same_resource(bc_resource(company_id, m.bc_api, e)) in keys for e in m.bc_entities)]


async def plan(db: Database) -> Plan:
    async with db.session() as session:
        mappings = await mapping_configs.configured(session)
    running, pushed, undecided = [], [], []
    for configured, row in mappings:
        if row is not None and row.unavailable:
            continue
        running.append(configured)
        if configured.bc_is_source and (row is None or row.bc_delivery in (None, "push")):
            pushed.append(configured)
            if row is None or row.bc_delivery is None:
                undecided.append(configured.name)
    return Plan(running, pushed, undecided)


def urls(settings: Settings) -> tuple[str, str]:
    public = str(settings.public_url).rstrip("/")
    return f"{public}/webhooks/business-central", f"{public}/webhooks/dataverse"


def _parse(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class KeeperReport:
    bc: dict[str, list[str]] = field(default_factory=dict)
    dataverse: dict[str, list[str]] = field(default_factory=dict)
    recreated: list[str] = field(default_factory=list)  # registrations that had existed and were gone
    caught_up: list[str] = field(default_factory=list)  # mappings whose catch-up was requested
    errors: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {"bc": self.bc, "dataverse": self.dataverse, "recreated": self.recreated,
                "caught_up": self.caught_up, "errors": self.errors}


async def our_bc_subscriptions(bc: BusinessCentralClient, notification_url: str,
                               apis: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Our subscriptions (by notificationUrl), by normalized resource; a route that answers 404 has none."""
    found: dict[str, dict[str, Any]] = {}
    for api in dict.fromkeys([V2, *(apis or [])]):
        try:
            subscriptions = await bc.list_subscriptions(api=api)
        except NotFound:
            continue
        for sub in subscriptions:
            if sub.get("notificationUrl") == notification_url:
                found.setdefault(same_resource(str(sub.get("resource", ""))), sub)
    return found


async def enrolled(db: Database, bc: BusinessCentralClient, settings: Settings) -> bool:
    """Whether there is anything to keep: registrations stored by an earlier pass, or subscriptions of
    ours in BC (registered by `bcsync setup`). Before that, a worker's keeper does nothing."""
    async with db.session() as session:
        if await jobs.subscription_states(session):
            return True
    return bool(await our_bc_subscriptions(bc, urls(settings)[0]))


async def keep(settings: Settings, db: Database, bc: BusinessCentralClient, dv: DataverseClient) -> KeeperReport:
    """One pass of the keeper (the caller holds the `job:keeper` lease)."""
    assert settings.bc_client_state and settings.dataverse_webhook_key, "BCSYNC_BC_CLIENT_STATE and webhook key"
    bc_url, dv_url = urls(settings)
    report = KeeperReport()
    now = datetime.now(UTC)
    async with db.session() as session:
        known = {row.key for row in await jobs.subscription_states(session)}
    affected: set[str] = set()
    wanted_plan = await plan(db)
    resources = wanted_plan.bc_resources()
    # ---- Business Central
    wanted = {same_resource(bc_resource(bc.company_id, api, name)): (api, name) for api, name in resources}
    try:
        bc_report = await register_bc_subscriptions(bc, bc_url, settings.bc_client_state.get_secret_value(),
                                                    resources)
        report.bc = _lists(bc_report)
        listed = await our_bc_subscriptions(bc, bc_url, [api for api, _ in resources])
    except Exception as exc:  # the state says so; the next pass tries again
        report.errors.append(f"Business Central: {exc}")
        async with db.session() as session:
            for key in wanted:
                if f"bc:{key}" in known:
                    await jobs.save_subscription_state(session, f"bc:{key}", system="bc", resource=key,
                                                       status="failed", last_check=now, error=str(exc)[:2000])
        bc_report, listed = RegistrationReport(), {}
    else:
        failures = {same_resource(f.split(": ", 1)[0]): f for f in bc_report.failed}
        created = {same_resource(r) for r in bc_report.created}
        renewed = {same_resource(r) for r in bc_report.renewed}
        async with db.session() as session:
            await jobs.forget_subscription_states(
                session, [k for k in known if k.startswith("bc:") and k.removeprefix("bc:") not in wanted])
            for key, (_, entity_set) in wanted.items():
                sub = listed.get(key, {})
                status = ("failed" if key in failures else "created" if key in created
                          else "renewed" if key in renewed else "kept" if sub else "missing")
                values: dict[str, Any] = {
                    "system": "bc", "resource": key, "subscription_id": sub.get("subscriptionId"),
                    "expires_at": _parse(sub.get("expirationDateTime")), "status": status, "last_check": now,
                    "error": failures.get(key)}
                if status in ("created", "renewed"):
                    values["last_change"] = now
                await jobs.save_subscription_state(session, f"bc:{key}", **values)
                if status == "created" and f"bc:{key}" in known:
                    report.recreated.append(key)
                    affected.update(m.name for m in MAPPINGS if entity_set in m.bc_entities)
            # BC refused the subscription of a side setup has not decided on (the keeper ran first): poll it. A
            # side setup found BC can notify stays pushed; its failure is retried by the next pass.
            for mapping in refused_mappings(bc.company_id, wanted_plan.pushed, bc_report.refused):
                if mapping.name in wanted_plan.undecided:
                    await mapping_configs.set_bc_delivery(session, mapping.name, "poll")
                    log.warning("BC refused a subscription; polling instead", mapping=mapping.name)
    # ---- Dataverse
    dv_key = f"dataverse:{WEBHOOK_NAME}"
    try:
        dv_report = await register_dataverse_webhook(dv, dv_url, settings.dataverse_webhook_key.get_secret_value(),
                                                     wanted_plan.dataverse_steps(), name=WEBHOOK_NAME)
        report.dataverse = _lists(dv_report)
        endpoint_id = None
        async for row in dv.list("serviceendpoints", filter=f"name eq '{WEBHOOK_NAME}'",
                                 select=["serviceendpointid"]):
            endpoint_id = str(row["serviceendpointid"])
        status = "created" if dv_report.created else "renewed" if dv_report.renewed or dv_report.removed else "kept"
        changes = [*dv_report.created, *dv_report.renewed, *dv_report.removed]
        async with db.session() as session:
            values = {"system": "dataverse", "resource": dv_url, "subscription_id": endpoint_id,
                      "status": status, "last_check": now, "error": "; ".join(changes)[:2000] or None}
            if changes:
                values["last_change"] = now
            await jobs.save_subscription_state(session, dv_key, **values)
        if dv_key in known and dv_report.created:
            report.recreated.extend(f"dataverse {c}" for c in dv_report.created)
            # "step Create of account", "image PostImage of step Update of account": the table is last.
            tables = {c.rsplit(" of ", 1)[-1] for c in dv_report.created if " of " in c}
            if any(c.startswith("serviceendpoint") for c in dv_report.created):
                tables = set(dataverse_tables(wanted_plan.running))
            affected.update(m.name for m in MAPPINGS if tables & set(m.dataverse_entities))
    except Exception as exc:
        report.errors.append(f"Dataverse: {exc}")
        async with db.session() as session:
            await jobs.save_subscription_state(session, dv_key, system="dataverse", resource=dv_url, status="failed",
                                               last_check=now, error=str(exc)[:2000])
    if affected:
        report.caught_up = [m for m in jobs.catch_up_mappings() if m in affected]
        async with db.session() as session:
            await jobs.request_catch_up(session, report.caught_up)
    log.info("subscription keeper pass", recreated=report.recreated, caught_up=report.caught_up,
             errors=report.errors, renewed=len(bc_report.renewed), created=len(bc_report.created))
    return report


def _lists(report: RegistrationReport) -> dict[str, list[str]]:
    return {"created": report.created, "kept": report.kept, "renewed": report.renewed, "removed": report.removed,
            "failed": report.failed}
