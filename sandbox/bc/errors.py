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
