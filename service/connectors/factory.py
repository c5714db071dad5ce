"""Both API clients from the settings: one token provider (one MSAL cache), one budget per system."""

from __future__ import annotations

from service.connectors.auth import TokenProvider
from service.connectors.budget import RequestBudget
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.settings import Settings, env_name


def token_provider(settings: Settings) -> TokenProvider:
    for field in ("tenant_id", "client_id", "client_secret"):
        if not getattr(settings, field):
            raise ValueError(f"missing setting {env_name(field)}")
    assert settings.tenant_id and settings.client_id and settings.client_secret  # for mypy
    return TokenProvider(str(settings.authority_host), settings.tenant_id, settings.client_id,
                         settings.client_secret.get_secret_value())


def make_clients(settings: Settings, tag: str | None = None) -> tuple[BusinessCentralClient, DataverseClient]:
    """`tag`: the installation's integration tag, which every Dataverse write carries (service/store/
    installation.py: `await integration_tag(settings, db)`); BCSYNC_INTEGRATION_TAG when not given."""
    for field in ("bc_company_id", "dataverse_url"):
        if not getattr(settings, field):
            raise ValueError(f"missing setting {env_name(field)}")
    assert settings.bc_company_id
    tag = tag or settings.integration_tag
    if not tag:  # an untagged write would come back through the webhook door as a user's change
        raise ValueError("no integration tag: pass the installation's (service.store.installation.integration_tag)")
    tokens = token_provider(settings)
    window = settings.request_window_seconds
    bc = BusinessCentralClient(settings.bc_service_root, settings.bc_company_id, settings.bc_scope, tokens,
                               RequestBudget(settings.bc_request_budget, window))
    dataverse = DataverseClient(settings.dataverse_api, settings.dataverse_token_scope, tokens,
                                RequestBudget(settings.dataverse_request_budget, window),
                                tag=tag)
    return bc, dataverse
