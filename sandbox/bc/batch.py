"""JSON `$batch` (`{"requests":[…]}` → `{"responses":[…]}`), at most 100 operations.

With `Isolation: snapshot` the batch is all-or-nothing: at the first failing operation every earlier
write is undone; the failing operation keeps its own error, the others answer 424 Failed Dependency.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.bc.api import dispatch
from sandbox.bc.calls import Call, Reply
from sandbox.bc.errors import BCError, bad_request, error_body
from sandbox.bc.runtime import BCSandbox

MAX_OPERATIONS = 100


class _Rollback(Exception):
    pass


def _target(url: str, api_root: str) -> tuple[str, dict[str, str]]:
    """An operation's url (absolute, rooted, or relative to the batch's API root) → (path, query)."""
    parts = urlsplit(url)
    path = parts.path
    if "/api/" in path:
        path = path.split("/api/", 1)[1]
    elif path.startswith("api/"):
        path = path[4:]
    elif not path.startswith(api_root + "/"):
        path = f"{api_root}/{path.lstrip('/')}"
    return path, dict(parse_qsl(parts.query, keep_blank_values=True))


async def run_batch(sb: BCSandbox, api_root: str, body: Any, headers: dict[str, str], base: str) -> Reply:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list):
        raise bad_request("The batch request body must hold a 'requests' array.")
    if len(requests) > MAX_OPERATIONS:
        raise bad_request(f"The batch contains {len(requests)} operations; at most {MAX_OPERATIONS} are "
                          "allowed.", "BadRequest_BatchTooLarge")
    snapshot = headers.get("isolation", "").lower() == "snapshot"
    calls = [_call(op, api_root, base) for op in requests]
    if snapshot and any("subscriptions" in call.path for _, call in calls):
        raise bad_request("Subscriptions cannot be changed inside a snapshot batch.")
    responses: list[dict[str, Any]] = []
    if not snapshot:
        for op_id, call in calls:
            responses.append(_response(op_id, await dispatch(sb, call)))
        return Reply(200, {"responses": responses})
    failed_at = -1
    try:
        with sb.store.transaction():
            for index, (op_id, call) in enumerate(calls):
                reply = await dispatch(sb, call)
                responses.append(_response(op_id, reply))
                if reply.status >= 400:
                    failed_at = index
                    raise _Rollback
    except _Rollback:
        dependency = error_body("BadRequest_FailedDependency",
                                "The operation was rolled back because another operation of the batch failed.")
        responses = [
            responses[failed_at] if i == failed_at else {"id": op_id, "status": 424, "headers": {},
                                                         "body": dependency}
            for i, (op_id, _) in enumerate(calls)
        ]
    return Reply(200, {"responses": responses})


def _call(op: Any, api_root: str, base: str) -> tuple[str, Call]:
    if not isinstance(op, dict) or not op.get("method") or not op.get("url"):
        raise bad_request("Each batch operation needs 'id', 'method' and 'url'.")
    path, query = _target(str(op["url"]), api_root)
    headers = {str(k).lower(): str(v) for k, v in (op.get("headers") or {}).items()}
    if path.endswith("$batch"):
        raise BCError(400, "BadRequest", "A batch cannot contain another batch.")
    return str(op.get("id", "")), Call(str(op["method"]).upper(), path, query, headers, op.get("body"), base)


def _response(op_id: str, reply: Reply) -> dict[str, Any]:
    headers = {"content-type": "application/json; odata.metadata=minimal", **reply.headers}
    out: dict[str, Any] = {"id": op_id, "status": reply.status, "headers": headers}
    if reply.text is not None:
        out["headers"]["content-type"] = reply.media_type
        out["body"] = reply.text
    elif reply.body is not None:
        out["body"] = reply.body
    return out
