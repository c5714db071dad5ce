"""OpenAPI-driven fuzz (schemathesis) of every endpoint of a real `bcsync api` process.

The schema is the app's own OpenAPI document (the same code the live process serves; a test checks they
are equal). Every operation runs schemathesis' coverage phase (boundary and negative values of every
parameter and body) and a bounded, derandomized fuzzing phase, with the credentials declared in the
document (admin bearer token, webhook key), against the api on PostgreSQL and RabbitMQ with the sandbox
behind it. Checks: no 5xx, no unhandled exception (nothing logged at error level), status codes, content
types, headers and bodies as documented, schema-invalid input refused, and authentication enforced
(`ignored_auth` repeats each authorized success without and with wrong credentials). A second pass
without any credentials expects every admin operation and the Dataverse door to refuse with 401.
"""

from __future__ import annotations

from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from sandbox.config import DEMO_CLIENT_SECRET
from service.app import create_app
from tests.harness import ADMIN_TOKEN, CLIENT_STATE, WEBHOOK_KEY, make_settings
from tests.security.conftest import LiveApi

SEED = 20251126
CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance", "negative_data_rejection", "ignored_auth", "missing_required_header",
}


def _config(*, authorized: bool, max_examples: int, coverage: bool) -> SchemathesisConfig:
    checks: dict[str, Any] = {"enabled": False, **{name: {"enabled": True} for name in CHECKS}}
    if not authorized:
        checks = {"enabled": False, "not_a_server_error": {"enabled": True}}
    config: dict[str, Any] = {
        "seed": SEED,
        "phases": {"examples": {"enabled": True}, "stateful": {"enabled": False},
                   "coverage": {"enabled": coverage}, "fuzzing": {"enabled": True}},
        # Without credentials, only well-formed requests: the refusal must be for the credentials alone.
        "generation": {"max-examples": max_examples, "deterministic": True, "database": "none",
                       "mode": "all" if authorized else "positive"},
        "checks": checks,
    }
    if authorized:
        # The doors' bodies are validated by pydantic in its lax mode, which reads e.g. `false` or "1" for an
        # integer field: such schema-invalid bodies are accepted, harmlessly (Dataverse sends neither), so
        # "schema-invalid input refused" is not asked of them. Every other check applies there too.
        config["operations"] = [{"include-path-regex": "^/webhooks/",
                                 "checks": {"negative_data_rejection": {"enabled": False}}}]
        config["auth"] = {"openapi": {"adminToken": {"bearer": ADMIN_TOKEN},
                                      "webhookKeyQuery": {"api_key": WEBHOOK_KEY}}}
    return SchemathesisConfig.from_dict(config)


DOCUMENT = create_app(make_settings("sqlite+aiosqlite:///nowhere/unused.db", "unused")).openapi()
authorized_schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config(authorized=True, max_examples=8,
                                                                            coverage=True))
anonymous_schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config(authorized=False, max_examples=4,
                                                                           coverage=False))
FUZZ_SETTINGS = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                         suppress_health_check=list(HealthCheck))


def _assert_no_error_logged(live_api: LiveApi, case: schemathesis.Case) -> None:
    errors = [e for e in live_api.new_log_events() if e.get("level") in ("error", "critical", "raw")
              or "exception" in e]
    assert not errors, f"{case.method} {case.formatted_path}: the api logged {errors[:3]}"


@authorized_schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_with_credentials(case: schemathesis.Case, live_api: LiveApi) -> None:
    case.call_and_validate(base_url=live_api.url, timeout=30)
    _assert_no_error_logged(live_api, case)


PROTECTED = ("/admin/", "/webhooks/dataverse")


@anonymous_schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_without_credentials(case: schemathesis.Case, live_api: LiveApi) -> None:
    response = case.call_and_validate(base_url=live_api.url, timeout=30)
    if case.path.startswith(PROTECTED):
        assert response.status_code == 401, (case.method, case.formatted_path, response.status_code, response.text)
    _assert_no_error_logged(live_api, case)


def test_the_live_document_is_the_one_fuzzed(live_api: LiveApi) -> None:
    served = requests.get(f"{live_api.url}/openapi.json", timeout=10).json()
    assert served == DOCUMENT
    schemes = served["components"]["securitySchemes"]
    assert schemes["adminToken"] == {"type": "http", "scheme": "bearer", "description": "BCSYNC_ADMIN_TOKEN"}
    assert {schemes["webhookKeyQuery"]["in"], schemes["webhookKeyHeader"]["in"]} == {"query", "header"}
    operations = [(path, op) for path, item in served["paths"].items() for op in item.values()]
    assert all(op.get("security") == [{"adminToken": []}] for path, op in operations if path.startswith("/admin/"))
    assert not any("422" in op["responses"] for _, op in operations)  # invalid input answers 400


def test_no_secret_reached_the_api_log(live_api: LiveApi) -> None:
    """After the fuzz (tokens in headers, keys in query strings, registrations carrying the secrets): not one
    of them in any log line of the api. Runs last in this module."""
    text = live_api.log.read_text(errors="replace")
    assert "admin request refused" in text and "webhook answered" in text  # the fuzz did reach both
    for secret in (ADMIN_TOKEN, WEBHOOK_KEY, CLIENT_STATE, DEMO_CLIENT_SECRET):
        assert secret not in text, secret
