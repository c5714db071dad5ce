"""Structured JSON logs on stdout, with the event's correlation id bound per request or message."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Values that must never reach a log line, whatever field they travel in.
_SECRET_KEYS = re.compile(
    r"(secret|password|^token$|access_token|authorization|webhook_key|client_?state|authvalue|^code$)", re.I
)
_SECRET_IN_TEXT = [
    (re.compile(r"(?i)((?:code|key|token|secret|password)=)[^&\s\"']+"), r"\1***"),  # in query strings
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@/\s\"']+(@)"), r"\1***\2"),  # URL user:password@
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1***"),  # an Authorization header's value
]


def redact_text(text: str) -> str:
    """`text` with the secrets it may carry masked: query values of code/key/token/secret/password, the
    password of a URL (database, broker), a bearer token."""
    for pattern, replacement in _SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in list(event.items()):
        if name != "event" and _SECRET_KEYS.search(name) and value is not None:
            event[name] = "***"
        elif isinstance(value, str):
            event[name] = redact_text(value)
    return event


class _Stdout:
    """Whatever sys.stdout is at the time of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(level: str = "INFO") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact,  # after the traceback became text: an exception's message is redacted too
    ]
    # Libraries' stdlib log records (uvicorn, alembic, aio-pika) become JSON lines too.
    handler = logging.StreamHandler(_Stdout())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
    ))
    logging.basicConfig(handlers=[handler], level=level, force=True)
    for noisy in ("aiormq", "aio_pika", "uvicorn.access", "httpx", "httpcore", "msal", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(_Stdout()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
