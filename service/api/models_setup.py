"""Answers of `POST /admin/setup` and `GET /admin/setup/check` (service/setup.py, service/schema_check.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BusinessCentralCheck(BaseModel):
    company: str = Field(description="the configured company id, found in Business Central")
    ok: bool


class IntegrationUser(BaseModel):
    """The Dataverse user the integration signs in as (WhoAmI): must be an application or non-interactive user."""

    id: str
    name: str | None
    application_user: bool


class Connections(BaseModel):
    business_central: BusinessCentralCheck
    integration_user: IntegrationUser


class MappingFindings(BaseModel):
    mapping: str
    available: bool = Field(description="false: setup keeps the mapping off (see `problems`)")
    bc_delivery: str = Field(description="push (webhook) | poll | none (BC's changes are not needed)")
    problems: list[str]
    warnings: list[str]


class CheckFindings(BaseModel):
    """The mappings held against both systems' live metadata."""

    ok: bool = Field(description="every mapping is available")
    unavailable: dict[str, str] = Field(description="mappings setup keeps off, with why")
    mappings: list[MappingFindings]
    warnings: list[str]
    bc_routes: dict[str, str] = Field(description="per BC API route: what its metadata said")
    webhook_resources: list[str] | None = Field(
        description="the resources BC can notify (webhookSupportedResources); null when BC did not say")


class SetupCheck(CheckFindings, Connections):
    """`GET /admin/setup/check`: what setup would find and do; writes nothing."""


class Registrations(BaseModel):
    """What setup did with the BC subscriptions or the Dataverse webhook steps."""

    created: list[str]
    kept: list[str]
    renewed: list[str] = Field(description="renewed or updated in place")
    removed: list[str]
    failed: list[str] = Field(description='"<what>: <status> <code>" (the others were still done)')
    refused: list[str] = Field(description="BC resources whose subscription BC refused: their BC side is polled")


class SetupMappingState(BaseModel):
    available: bool
    reason: str | None = Field(description="why setup keeps the mapping off")
    bc_delivery: str = Field(description="push | poll | none")


class SetupReport(Connections):
    """`POST /admin/setup`: checked, seeded, registered."""

    mappings_seeded: int = Field(description="mappings stored with their defaults by this run")
    check: CheckFindings
    bc_subscriptions: Registrations
    dataverse_webhook: Registrations
    changed: bool = Field(description="anything stored or registered changed")
    mappings: dict[str, SetupMappingState]
