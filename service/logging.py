"""Structured JSON logs on stdout, with the event's correlation id bound per request or message."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# Values that must never reach a log line, whatever field they travel in and however deep: a key is compared
# lowercased without separators (clientState, client_state, x-bcsync-webhook-key, BCSYNC_ADMIN_TOKEN, ...).
_SECRET_KEY = re.compile(
    r"secret|password|passwd|clientstate|webhookkey|authvalue|apikey|privatekey|token$|authorization$|^code$"
    r"|^cookie$|^setcookie$"
)
# (not "code" here: in a JSON body it is an error code, e.g. Dataverse's "0x80040217"; the key `code` is masked)
_QUOTED_KEY = r"[A-Za-z_-]*(?:secret|password|token|client_?state|authorization|webhook_?key)"
_SECRET_IN_TEXT = [
    # in query strings and forms: ?code=, webhook_key=, access_token=, client_secret=, clientState=
    (re.compile(r"(?i)((?:code|key|token|secret|password|client_?state)=)[^&\s\"']+"), r"\1***"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@/\s\"']+(@)"), r"\1***\2"),  # URL user:password@
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1***"),  # an Authorization header's value
    # a JSON body or a Python dict as text: "clientState": "…", 'client_secret': '…'
    (re.compile(rf"""(?i)((["'])(?:{_QUOTED_KEY})\2\s*:\s*)(["'])(?:(?!\3).)*\3"""), r"\1\3***\3"),
]
_MAX_DEPTH = 12  # deeper than any log call of ours; what lies deeper is left as it is


def redact_text(text: str) -> str:
    """`text` with the secrets it may carry masked: query values of code/key/token/secret/password/clientState,
    the password of a URL (database, broker), a bearer token, secret-named fields of JSON or dicts as text."""
    for pattern, replacement in _SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(name: str) -> bool:
    """A field name whose value is a secret: clientState, client_secret, password, token, access_token,
    refresh_token, authorization, webhook key, code, admin token, ... (any case and separators)."""
    return bool(_SECRET_KEY.search(re.sub(r"[^a-z0-9]", "", name.lower())))


def redact(value: Any, depth: int = 0) -> Any:
    """`value` with its secrets masked: strings by `redact_text`, and inside dicts, lists and tuples (copies:
    the caller's objects are left alone) every value under a secret-named key by "***"."""
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {key: "***" if isinstance(key, str) and is_secret_key(key) and item is not None
                else redact(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact(item, depth + 1) for item in value]
        return items if isinstance(value, list | set | frozenset) else tuple(items)
    return value


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in list(event.items()):
        if name != "event" and is_secret_key(name) and value is not None:
            event[name] = "***"
        else:
            event[name] = redact(value)
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
