"""BC's error shape: `{"error":{"code","message"}}`, the message ending with a CorrelationId."""

from __future__ import annotations

import uuid
from typing import Any


class BCError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    # Two spaces before and after "CorrelationId:" as BC writes it.
    return {"error": {"code": code, "message": f"{message}  CorrelationId:  {uuid.uuid4()}."}}


def not_found(entity: str, key: str) -> BCError:
    return BCError(
        404, "BadRequest_NotFound",
        f"The {entity} does not exist. Identification fields and values: Id='{key}'",
    )


def bad_request(message: str, code: str = "BadRequest") -> BCError:
    return BCError(400, code, message)


def unknown_property(entity: str, name: str) -> BCError:
    """A body property the entity type lacks. BC's text as seen in real logs quoted by third-party code (no
    Microsoft page quotes it): "The property 'yourReference' does not exist on type 'Microsoft.NAV.salesOrder'.
    Make sure to only use property names that are defined by the type."."""
    return BCError(400, "BadRequest", f"The property '{name}' does not exist on type 'Microsoft.NAV.{entity}'. "
                                      "Make sure to only use property names that are defined by the type.")


def no_route(url: str) -> BCError:
    """No API answers this URL, e.g. a custom API whose extension is not installed (microsoft/AL issues #8283
    and #7889; Learn "Troubleshooting REST API/OData calls": 404, "this endpoint isn't available in
    metadata ... might be due to uninstalling ... an app/extension")."""
    return BCError(404, "BadRequest_NotFound", f"No HTTP resource was found that matches the request URI '{url}'.")


def no_segment(name: str) -> BCError:
    """An unknown entity set under a valid API route (Learn "Troubleshooting REST API/OData calls",
    BadRequest_ResourceNotFound "Resource not found for the segment '...'")."""
    return BCError(404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{name}'.")
