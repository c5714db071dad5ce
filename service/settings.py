"""The service's settings: environment variables (and `.env`) exactly as in docs/contract.md."""

from __future__ import annotations

import re
from typing import Literal, TypeVar

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BCSYNC_"
_TAG = re.compile(r"[A-Za-z0-9_.-]{16,64}")
MAX_RETRY_DELAY = 1200  # seconds; see Settings._delays


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./bcsync.db"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    namespace: str = Field(default="bcsync", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    authority_host: AnyHttpUrl = AnyHttpUrl("https://login.microsoftonline.com")

    bc_url: str = "https://api.businesscentral.dynamics.com/v2.0/{tenant}/{environment}"
    bc_environment: str = "production"
    bc_company_id: str | None = None
    bc_scope: str = "https://api.businesscentral.dynamics.com/.default"

    dataverse_url: AnyHttpUrl | None = None
    dataverse_scope: str | None = None
    dataverse_webhook_key: SecretStr | None = None
    bc_client_state: SecretStr | None = None

    public_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    admin_token: SecretStr | None = None
    reconcile_minutes: int = Field(default=30, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # Not in the contract's table (additions are allowed); documented in the README.
    integration_user_id: str | None = None  # skips WhoAmI: the Dataverse user id of the integration
    # The `?tag=` of our Dataverse writes. Unset (the normal case): random per installation, generated once
    # and kept in the store (service/store/installation.py). Set: this one, which must be as unguessable.
    integration_tag: str | None = None
    # Where the CLI's admin commands reach the api; unset: http://<host>:<port> (a wildcard host: 127.0.0.1).
    api_url: AnyHttpUrl | None = None
    worker_prefetch: int = Field(default=32, ge=1, le=1000)  # per consumer, i.e. per mapping queue
    worker_concurrency: int = Field(default=16, ge=1, le=256)  # records one worker applies at once
    worker_memory_trim_seconds: float = Field(default=60.0, ge=0)  # glibc malloc_trim interval; 0 = never
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0 = no metrics server
    retry_delays: str = "1,5,30,120,600"  # seconds of the retry delay queues, one per attempt
    # Transient failures (no answer, 408, 429, 5xx, the store away) do not spend the retries above: they wait
    # (the same delays, then the longest one over and over) for up to this many hours, then dead-letter.
    transient_retry_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # One event's handling at most (then it counts as a transient failure): far below RabbitMQ's
    # consumer_timeout (30 min by default), so the broker never closes a channel over a slow run.
    handler_timeout_seconds: float = Field(default=600.0, gt=0, le=1700)
    dedupe_days: int = Field(default=7, ge=1)
    # The record history (service/store/history.py): entries are kept this many days (at least 1: the history is
    # always written; pruned by the workers' jobs), and a value's text form is cut to this many characters.
    history_days: int = Field(default=30, ge=1, le=3650)
    history_value_chars: int = Field(default=500, ge=20, le=10_000)
    # The operator console (/console, service/console/): signs its session cookie with this key. Unset: a random
    # key per process, so sign-ins end when the api restarts and several api processes do not share them.
    console_session_secret: SecretStr | None = Field(default=None, min_length=32)
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 7)  # a sign-in lasts this long
    local_currency: str = Field(default="USD", pattern=r"^[A-Za-z]{3}$")  # BC's LCY: blank currency codes
    # Client-side request budgets: never more than this many requests per window to each system (per
    # process; divide by the number of workers when you run several against one tenant).
    bc_request_budget: int = Field(default=6000, ge=1)
    dataverse_request_budget: int = Field(default=6000, ge=1)
    request_window_seconds: float = Field(default=300.0, gt=0)
    # SALESORDER-ORDER: a custom salesorder column that receives the BC order number (a standard org has none).
    order_number_column: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    # Resource bounds of the api (README, "Resource bounds"). uvicorn answers 503 past the concurrency limit
    # (open connections or running requests); idle keep-alive connections count, hence the short keep-alive.
    api_limit_concurrency: int = Field(default=512, ge=1)
    api_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    # A webhook whose events are not committed within this many seconds is answered 503 (Dataverse gives up
    # after 60 s); events waiting for the intake writer beyond the queue bound are answered 503 at once.
    webhook_store_timeout_seconds: float = Field(default=10.0, gt=0, le=55)
    intake_queue_events: int = Field(default=10_000, ge=1)
    # One database statement at most in the api (asyncpg's command_timeout, SQLite's busy timeout); the other
    # processes use the same default (store/db.py, DEFAULT_TIMEOUT).
    database_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL (sqlite+aiosqlite:///file.db or postgresql+asyncpg://…)") from None
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(f"unsupported driver {url.drivername!r}: use sqlite+aiosqlite or postgresql+asyncpg")
        return value

    @field_validator("integration_tag", mode="before")
    @classmethod
    def _tag(cls, value: object) -> object:
        if value is None or value == "":
            return None  # generated per installation
        if not isinstance(value, str) or not _TAG.fullmatch(value):
            raise ValueError("16 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-' that nobody can guess (leave it "
                             "unset: each installation generates its own)")
        return value

    @field_validator("api_url", mode="before")
    @classmethod
    def _empty_url(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("retry_delays")
    @classmethod
    def _delays(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError("a comma-separated list of positive whole seconds")
        # A retry waits unacknowledged in a worker (consumers/retry_waits.py) for up to its delay: it must stay
        # well below RabbitMQ's consumer_timeout (30 min by default), which would close the channel.
        if too_long := [p for p in parts if int(p) > MAX_RETRY_DELAY]:
            raise ValueError(f"each delay at most {MAX_RETRY_DELAY} s (a retry waits unacknowledged in a worker, "
                             f"well below RabbitMQ's consumer_timeout of 1800 s); too long: {', '.join(too_long)}")
        return ",".join(parts)

    @property
    def retry_delay_seconds(self) -> list[int]:
        return [int(p) for p in self.retry_delays.split(",")]

    @property
    def bc_service_root(self) -> str:
        return self.bc_url.format(tenant=self.tenant_id or "", environment=self.bc_environment).rstrip("/")

    @property
    def dataverse_api(self) -> str:
        return f"{str(self.dataverse_url).rstrip('/')}/api/data/v9.2"

    @property
    def dataverse_token_scope(self) -> str:
        return self.dataverse_scope or f"{str(self.dataverse_url).rstrip('/')}/.default"


S = TypeVar("S", bound=BaseSettings)


class SettingsError(SystemExit):
    """Stops the process with one line naming the variable."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(*required: str) -> Settings:
    """Read the settings; exit with one clear line if one is invalid or a `required` one is missing."""
    return read_settings(Settings, *required)


def read_settings(cls: type[S], *required: str) -> S:
    """`load_settings` for another BaseSettings class of ours (the workers' job settings)."""
    try:
        settings = cls()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = env_name(str(first["loc"][0])) if first["loc"] else ENV_PREFIX
        raise SettingsError(f"bcsync: invalid setting {name}: {first['msg']}") from None
    for field in required:
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()  # an empty secret is as good as none
        if value in (None, ""):
            raise SettingsError(f"bcsync: missing setting {env_name(field)}")
    return settings
