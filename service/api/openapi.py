"""The OpenAPI document (`/openapi.json`, `/docs`) as the api really answers.

FastAPI documents a 422 for invalid input, which this api answers with 400 (see `app.invalid_request`),
and knows nothing of the bodies the webhook doors read themselves (size-bounded, then validated). This
fills in what the routes cannot say: 400 instead of 422, 401/503 of every admin operation, a schema for
every error body, and the wire models of both webhook bodies (referenced by the routes' `openapi_extra`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from schemas.business_central import NotificationBatch
from schemas.dataverse import RemoteExecutionContext

REF = "#/components/schemas/{model}"
PROBLEM = {"$ref": "#/components/schemas/Problem"}
WEBHOOK_ANSWER = {"$ref": "#/components/schemas/WebhookAnswer"}
COMPONENTS: dict[str, dict[str, Any]] = {
    "Problem": {
        "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}},
        "description": "Why the request was refused: for invalid input, every problem named.",
    },
    "WebhookAnswer": {
        "type": "object", "required": ["detail"],
        "properties": {
            "outcome": {"enum": ["accepted", "ignored", "unauthorized", "invalid", "unavailable"]},
            "detail": {"type": "string"},
        },
    },
}
DESCRIPTIONS = {
    "400": "Invalid input; `detail` names every problem",
    "401": "Missing or wrong credentials",
    "404": "No such resource",
    "409": "Refused in the current state",
    "413": "Body over 1 MiB",
    "502": "Business Central or Dataverse answered with an error",
    "503": "Not available right now (or not configured)",
}


def _any_of(node: Any) -> Any:
    """Pydantic writes a callable discriminator as `oneOf`, with an "anything else" branch that overlaps the
    others; on the wire a value may match several branches, which is `anyOf`."""
    if isinstance(node, dict):
        return {("anyOf" if key == "oneOf" else key): _any_of(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_any_of(value) for value in node]
    return node


def wire_models() -> dict[str, Any]:
    """JSON schemas of the webhook bodies (and the models they use), keyed by component name."""
    found: dict[str, Any] = {}
    for model in (RemoteExecutionContext, NotificationBatch):
        schema = model.model_json_schema(by_alias=True, ref_template=REF)
        found.update(schema.pop("$defs", {}))
        if "$ref" not in schema:  # a recursive model is itself in `$defs`, and `schema` only points there
            found[model.__name__] = schema
    return _any_of(found)


def build(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components.update(COMPONENTS)
    components.update(wire_models())
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses: dict[str, Any] = operation["responses"]
            if responses.pop("422", None) is not None:
                responses.setdefault("400", {})
            if path.startswith("/admin/"):
                responses.setdefault("401", {})
                responses.setdefault("503", {})
            for code, response in responses.items():
                if code >= "400":
                    body = WEBHOOK_ANSWER if path.startswith("/webhooks/") else PROBLEM
                    response["description"] = DESCRIPTIONS.get(code, response.get("description", ""))
                    response["content"] = {"application/json": {"schema": body}}
                elif path.startswith("/webhooks/") and "application/json" in response.get("content", {}):
                    response["content"]["application/json"]["schema"] = WEBHOOK_ANSWER
    return document


def install(app: FastAPI) -> None:
    """Serve `build(app)` (once) as the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
