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


def make_clients(settings: Settings) -> tuple[BusinessCentralClient, DataverseClient]:
    for field in ("bc_company_id", "dataverse_url"):
        if not getattr(settings, field):
            raise ValueError(f"missing setting {env_name(field)}")
    assert settings.bc_company_id
    tokens = token_provider(settings)
    window = settings.request_window_seconds
    bc = BusinessCentralClient(settings.bc_service_root, settings.bc_company_id, settings.bc_scope, tokens,
                               RequestBudget(settings.bc_request_budget, window))
    dataverse = DataverseClient(settings.dataverse_api, settings.dataverse_token_scope, tokens,
                                RequestBudget(settings.dataverse_request_budget, window),
                                tag=settings.integration_tag)
    return bc, dataverse
