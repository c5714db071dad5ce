"""One API call in and its answer out, shared by HTTP requests and `$batch` operations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from sandbox.bc.errors import BCError


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # a non-JSON body ($metadata), sent with `media_type`
    media_type: str = "application/xml; charset=utf-8"


@dataclass
class Call:
    method: str
    path: str  # after `/api/`, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    base: str  # `http://host/v2.0/<tenant>/<env>/api`, for nextLink and @odata.context

    @property
    def url(self) -> str:
        """The request URI as BC quotes it in "No HTTP resource was found …"."""
        query = "?" + urlencode(self.query, quote_via=quote, safe="$(),':") if self.query else ""
        return f"{self.base}/{self.path}{query}"


def error_reply(exc: BCError) -> Reply:
    return Reply(exc.status, exc.body(), dict(exc.headers))


def method_not_allowed(method: str) -> BCError:
    return BCError(405, "BadRequest_MethodNotAllowed", f"'{method}' requests are not allowed here.")
