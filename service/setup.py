"""Assisted setup (`bcsync setup`, `POST /admin/setup`) and its read-only half (`GET /admin/setup/check`).

Setup: check both connections, seed the mappings, hold every mapping against both systems' live metadata
(service/schema_check.py), keep off the mappings that cannot run there (their BC API route is not installed,
the tenant lacks a field they map, …) and say why, subscribe to the BC resources BC can notify and poll the
others, register the Dataverse webhook for the tables of the mappings that run, and report what was done.
Running it again changes nothing; running it after installing the BC extension (or switching a field off)
starts what was kept off.
"""

from __future__ import annotations

from typing import Any

from schemas.mappings import MAPPINGS, TableMapping
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.http import ApiError
from service.registration import register_bc_subscriptions, register_dataverse_webhook
from service.schema_check import CheckReport, check
from service.settings import Settings
from service.store import mapping_configs
from service.store.db import Database
from service.subscriptions import Plan, keeper_lease, refused_mappings, urls

NON_INTERACTIVE = 4  # systemuser.accessmode of application users
SETUP_LEASE_WAIT_SECONDS = 60.0  # a keeper pass registers a handful of subscriptions: seconds


class SetupRefused(Exception):
    """A check failed: nothing was registered; the message says what to fix."""


async def check_integration_user(dv: DataverseClient) -> dict[str, Any]:
    user_id = await dv.who_am_i()
    user = await dv.get("systemusers", user_id, select=["fullname", "accessmode", "applicationid", "isdisabled"])
    if user is None:
        raise SetupRefused(f"WhoAmI named user {user_id}, which cannot be read")
    if not user.get("applicationid") and user.get("accessmode") != NON_INTERACTIVE:
        raise SetupRefused(
            f"the integration user {user.get('fullname')!r} ({user_id}) is a normal interactive user. bcsync ignores "
            "every change its own user makes (that is how it avoids echo loops), so whatever a person does while "
            "signed in as that user would never be synchronized. Create an application user for the app "
            "registration (Power Platform admin center → Application users) and use its client id.")
    return {"id": user_id, "name": user.get("fullname"), "application_user": bool(user.get("applicationid"))}


async def check_connections(bc: BusinessCentralClient, dv: DataverseClient) -> dict[str, Any]:
    """Both systems answer, with the configured company and a non-interactive integration user."""
    try:
        companies = await bc.companies()
    except ApiError as exc:
        raise SetupRefused(f"Business Central: {exc}") from None
    if not any(str(c.get("id", "")).lower() == bc.company_id.lower() for c in companies):
        raise SetupRefused(f"Business Central has no company {bc.company_id}; it has: "
                           + ", ".join(f"{c.get('name')} ({c.get('id')})" for c in companies))
    try:
        user = await check_integration_user(dv)
    except ApiError as exc:
        raise SetupRefused(f"Dynamics 365 Sales: {exc}") from None
    return {"business_central": {"company": bc.company_id, "ok": True}, "integration_user": user}


async def configured_mappings(db: Database) -> list[TableMapping]:
    """Every mapping with the installation's changes applied."""
    async with db.session() as session:
        return [mapping for mapping, _ in await mapping_configs.configured(session)]


async def run_check(bc: BusinessCentralClient, dv: DataverseClient, db: Database) -> dict[str, Any]:
    """`GET /admin/setup/check`: what setup would find and do; writes nothing."""
    report = await check_connections(bc, dv)
    findings = await check(bc, dv, await configured_mappings(db))
    return {**report, **findings.json()}


async def run_setup(settings: Settings, bc: BusinessCentralClient, dv: DataverseClient, db: Database) -> dict[str, Any]:
    report = await check_connections(bc, dv)
    seeded = 0
    async with db.session() as session:
        existing = await mapping_configs.all_configs(session)
        for mapping in MAPPINGS:
            if mapping.name not in existing:
                await mapping_configs.get(session, mapping.name)
                seeded += 1
    report["mappings_seeded"] = seeded
    mappings = await configured_mappings(db)
    findings = await check(bc, dv, mappings)
    # Stored before anything is registered: the first webhooks of a mapping that starts now find it running.
    changed = await _store(db, findings) or bool(seeded)
    running = [m for m in mappings if findings.mappings[m.name].available]
    wanted = Plan(running, [m for m in running if findings.mappings[m.name].bc_delivery == "push"])
    bc_url, dv_url = urls(settings)
    assert settings.bc_client_state and settings.dataverse_webhook_key
    # Not while a worker's keeper (or a refresh) registers too: KeeperBusy when it does not end in time.
    async with keeper_lease(db, SETUP_LEASE_WAIT_SECONDS):
        subscriptions = await register_bc_subscriptions(bc, bc_url, settings.bc_client_state.get_secret_value(),
                                                        wanted.bc_resources())
        if findings.webhook_resources is None:  # BC did not say what it can notify: a refusal says it cannot
            for mapping in refused_mappings(bc.company_id, wanted.pushed, subscriptions.refused):
                found = findings.mappings[mapping.name]
                found.bc_delivery = "poll"
                found.warnings.append("Business Central refused its subscription: its BC side is polled")
            changed = await _store(db, findings) or changed
        webhook = await register_dataverse_webhook(dv, dv_url, settings.dataverse_webhook_key.get_secret_value(),
                                                   wanted.dataverse_steps())
    changed = changed or subscriptions.changed or webhook.changed
    return {**report, "check": findings.json(), "bc_subscriptions": vars(subscriptions),
            "dataverse_webhook": vars(webhook), "changed": changed,
            "mappings": {n: {"available": f.available, "reason": f.reason, "bc_delivery": f.bc_delivery}
                         for n, f in findings.mappings.items()}}


async def _store(db: Database, findings: CheckReport) -> bool:
    """Setup's findings per mapping (kept off and why; push, poll or none); whether anything changed."""
    changed = False
    async with db.session() as session:
        rows = await mapping_configs.all_configs(session)
        for name, found in findings.mappings.items():
            row = rows.get(name)
            if row is None or (row.unavailable, row.bc_delivery) != (found.reason, found.bc_delivery):
                changed = True
                await mapping_configs.set_findings(session, name, unavailable=found.reason,
                                                   bc_delivery=found.bc_delivery)
    return changed
