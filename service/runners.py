"""The api process: `bcsync api` and `python -m service` (the worker's is consumers/run.py)."""

from __future__ import annotations

from typing import Any

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


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the api."""
    return {
        "host": settings.host, "port": settings.port,
        # The access log would print `?code=<webhook key>`: the app logs each webhook itself.
        "access_log": False, "log_config": None, "log_level": settings.log_level.lower(),
        # Past this many open connections or running requests uvicorn answers 503 (both webhook senders
        # retry a 503) instead of taking on work without end; idle keep-alive connections count too.
        "limit_concurrency": settings.api_limit_concurrency,
        "timeout_keep_alive": settings.api_keep_alive_seconds,
    }


def run_api() -> None:
    settings = api_settings()
    configure_logging(settings.log_level)
    from service.app import create_app  # after logging is set up

    uvicorn.run(create_app(settings), **server_options(settings))
