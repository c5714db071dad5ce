"""Assisted setup (`bcsync setup`, `POST /admin/setup`): check both connections, seed the mappings,
register both systems' webhooks, report what was done. Running it again changes nothing."""

from __future__ import annotations

from typing import Any

from schemas.mappings import MAPPINGS, bc_resources, dataverse_tables
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.http import ApiError
from service.registration import register_bc_subscriptions, register_dataverse_webhook
from service.settings import Settings
from service.store import mapping_configs
from service.store.db import Database

MESSAGES = ("Create", "Update", "Delete")
NON_INTERACTIVE = 4  # systemuser.accessmode of application users


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


async def run_setup(settings: Settings, bc: BusinessCentralClient, dv: DataverseClient, db: Database) -> dict[str, Any]:
    report: dict[str, Any] = {}
    try:
        companies = await bc.companies()
    except ApiError as exc:
        raise SetupRefused(f"Business Central: {exc}") from None
    if not any(str(c.get("id", "")).lower() == bc.company_id.lower() for c in companies):
        raise SetupRefused(f"Business Central has no company {bc.company_id}; it has: "
                           + ", ".join(f"{c.get('name')} ({c.get('id')})" for c in companies))
    report["business_central"] = {"company": bc.company_id, "ok": True}
    try:
        report["integration_user"] = await check_integration_user(dv)
    except ApiError as exc:
        raise SetupRefused(f"Dynamics 365 Sales: {exc}") from None
    seeded = 0
    async with db.session() as session:
        existing = await mapping_configs.all_configs(session)
        for mapping in MAPPINGS:
            if mapping.name not in existing:
                await mapping_configs.get(session, mapping.name)
                seeded += 1
    report["mappings_seeded"] = seeded
    public = str(settings.public_url).rstrip("/")
    assert settings.bc_client_state and settings.dataverse_webhook_key
    subscriptions = await register_bc_subscriptions(bc, f"{public}/webhooks/business-central",
                                                    settings.bc_client_state.get_secret_value(), bc_resources())
    steps: list[tuple[str, str, list[str] | None]] = [(t, m, None) for t in dataverse_tables() for m in MESSAGES]
    webhook = await register_dataverse_webhook(dv, f"{public}/webhooks/dataverse",
                                               settings.dataverse_webhook_key.get_secret_value(), steps)
    report["bc_subscriptions"] = vars(subscriptions)
    report["dataverse_webhook"] = vars(webhook)
    report["changed"] = bool(seeded or subscriptions.changed or webhook.changed)
    return report
