"""The api process: `bcsync api` and `python -m service` (the worker's is consumers/run.py)."""

from __future__ import annotations

import uvicorn

from service.logging import configure_logging, get_logger
from service.settings import Settings, SettingsError, load_settings

log = get_logger(__name__)

DATAVERSE_CREDENTIALS = ("tenant_id", "client_id", "client_secret", "dataverse_url")


def api_settings() -> Settings:
    settings = load_settings("dataverse_webhook_key", "bc_client_state")
    if settings.integration_user_id is None:
        # Without a given integration user id, WhoAmI needs the Dataverse connection.
        for name in DATAVERSE_CREDENTIALS:
            if getattr(settings, name) in (None, ""):
                raise SettingsError(
                    f"bcsync: missing setting BCSYNC_{name.upper()} "
                    "(needed for WhoAmI; or set BCSYNC_INTEGRATION_USER_ID)"
                )
    return settings


def run_api() -> None:
    settings = api_settings()
    configure_logging(settings.log_level)
    from service.app import create_app  # after logging is set up

    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        # The access log would print `?code=<webhook key>`: the app logs each webhook itself.
        access_log=False, log_config=None, log_level=settings.log_level.lower(),
    )
