"""Every admin operation documents its answer and its request body with a model (issue 15): the OpenAPI
document describes what the console and the CLI use."""

from __future__ import annotations

from typing import Any

import pytest

from service.app import create_app
from tests.harness import make_settings

REF = "#/components/schemas/"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(make_settings("sqlite+aiosqlite:///nowhere/unused.db", "unused")).openapi()


def admin_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation) for path, operations in document["paths"].items()
            if path.startswith("/admin/") for method, operation in operations.items()]


def is_model(schema: dict[str, Any] | None, document: dict[str, Any]) -> bool:
    """A `$ref` to a component, or an array of them."""
    if not schema:
        return False
    if schema.get("type") == "array":
        schema = schema.get("items")
    ref = (schema or {}).get("$ref", "")
    return ref.startswith(REF) and ref.removeprefix(REF) in document["components"]["schemas"]


def test_every_admin_answer_has_a_model(document: dict[str, Any]) -> None:
    operations = admin_operations(document)
    assert len(operations) >= 28
    missing = []
    for method, path, operation in operations:
        successes = {code: answer for code, answer in operation["responses"].items() if code.startswith("2")}
        assert successes, (method, path)
        for code, answer in successes.items():
            if code == "204":
                assert "content" not in answer, (method, path)
                continue
            if not is_model(answer.get("content", {}).get("application/json", {}).get("schema"), document):
                missing.append(f"{method} {path} {code}")
    assert not missing, f"admin answers without a model: {missing}"


def test_every_admin_request_body_has_a_model(document: dict[str, Any]) -> None:
    bodies = {f"{method} {path}": operation["requestBody"] for method, path, operation in admin_operations(document)
              if "requestBody" in operation}
    assert set(bodies) == {"PATCH /admin/mappings/{name}", "POST /admin/couplings", "POST /admin/couplings/match",
                           "POST /admin/full-sync", "POST /admin/catch-up"}
    for name, body in bodies.items():
        assert list(body["content"]) == ["application/json"], name
        assert is_model(body["content"]["application/json"]["schema"], document), name
    # The jobs' bodies are optional (no body: every mapping) and refuse unknown members.
    for name in ("POST /admin/full-sync", "POST /admin/catch-up"):
        assert not bodies[name].get("required")
        model = bodies[name]["content"]["application/json"]["schema"]["$ref"].removeprefix(REF)
        assert document["components"]["schemas"][model]["additionalProperties"] is False


def test_the_models_name_the_fields_the_api_answers(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["CouplingOut"]["properties"]) == {
        "id", "mapping", "bc_id", "dataverse_id", "bc_modified", "dataverse_modified", "bc_hash", "dataverse_hash",
        "last_result", "attempts", "info", "written", "created_at", "updated_at"}
    assert "event" not in schemas["SyncErrorOut"]["properties"] and "retryable" in schemas["SyncErrorOut"]["properties"]
    # Members answered only sometimes are not required.
    assert "queued_for_creation" not in schemas["MatchReport"]["required"]
    assert "review" not in schemas["FullSyncStatus"]["required"]
    assert set(schemas["CatchUpState"]["required"]) == {"mapping", "minutes", "on_hold"}
