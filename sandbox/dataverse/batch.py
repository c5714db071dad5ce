"""`POST $batch` (multipart/mixed): up to 1,000 operations; change sets are all-or-nothing.

Each operation runs through the same `execute` as a plain request. A change set is parsed first, the
tables it touches are snapshotted, and its webhooks are held back until it commits; on the first failure
the tables are restored and the failure is the change set's only response. Outside change sets the
batch stops at the first failure unless `Prefer: odata.continue-on-error`. `$<Content-ID>` references to
entities created earlier in the change set work in URLs and `@odata.bind` values.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response

from sandbox.dataverse import errors, identity
from sandbox.dataverse.engine import Change
from sandbox.dataverse.schema import BY_SET
from sandbox.dataverse.state import DataverseState

MAX_OPERATIONS = 1000
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_REQUEST_LINE = re.compile(r"^(GET|POST|PATCH|DELETE|PUT)\s+(\S+)(?:\s+HTTP/1\.1)?$")

Executor = Callable[[DataverseState, Request, str, identity.Caller], Awaitable[Response]]


@dataclass
class Operation:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class Part:
    operation: Operation | None = None
    changeset: list[Operation] = field(default_factory=list)


def _split(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)[1:]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        parts.append(chunk.strip(b"\r\n"))
    return parts


def _headers_and_rest(chunk: bytes) -> tuple[dict[str, str], bytes]:
    text = chunk.replace(b"\r\n", b"\n")
    head, _, rest = text.partition(b"\n\n")
    headers = {}
    for line in head.decode().split("\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _operation(chunk: bytes) -> Operation:
    part_headers, rest = _headers_and_rest(chunk)
    request_text, _, _ = rest.partition(b"\n")
    match = _REQUEST_LINE.match(request_text.decode().strip())
    if not match:
        raise errors.DataverseError(400, errors.BAD_PAYLOAD, "Malformed request line in $batch.")
    headers, body = _headers_and_rest(rest[len(request_text) + 1:])
    return Operation(match.group(1), match.group(2), headers, body.strip(), part_headers.get("content-id"))


def parse(body: bytes, content_type: str) -> list[Part]:
    found = _BOUNDARY.search(content_type)
    if not content_type.startswith("multipart/mixed") or not found:
        raise errors.DataverseError(400, errors.BAD_PAYLOAD, "$batch needs a multipart/mixed body with a boundary.")
    parts: list[Part] = []
    for chunk in _split(body, found.group(1)):
        headers, rest = _headers_and_rest(chunk)
        inner = _BOUNDARY.search(headers.get("content-type", ""))
        if headers.get("content-type", "").startswith("multipart/mixed") and inner:
            parts.append(Part(changeset=[_operation(c) for c in _split(rest, inner.group(1))]))
        else:
            parts.append(Part(operation=_operation(chunk)))
    count = sum(1 if p.operation else len(p.changeset) for p in parts)
    if count > MAX_OPERATIONS:
        raise errors.DataverseError(400, errors.BAD_PAYLOAD,
                                    f"The number of requests in a batch exceeds {MAX_OPERATIONS}.")
    return parts


def _inner_request(outer: Request, op: Operation, ids: dict[str, str]) -> tuple[Request, str]:
    url = op.url
    for content_id, entity_url in ids.items():
        if url.startswith(f"${content_id}"):
            url = entity_url + url[len(content_id) + 1:]
    body = op.body
    for content_id, entity_url in ids.items():
        body = body.replace(f'"${content_id}"'.encode(), json.dumps(entity_url).encode())
    path_and_query = re.sub(r"^https?://[^/]+", "", url)
    if not path_and_query.startswith("/"):
        path_and_query = "/api/data/v9.2/" + path_and_query
    path, _, query = path_and_query.partition("?")
    headers = [(k.lower().encode(), v.encode()) for k, v in op.headers.items()]
    headers += [(b"host", (outer.headers.get("host") or "127.0.0.1").encode())]
    if "prefer" not in op.headers and outer.headers.get("prefer"):
        headers.append((b"prefer", outer.headers["prefer"].encode()))
    scope = {"type": "http", "method": op.method, "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "headers": headers, "scheme": outer.url.scheme,
             "server": (outer.url.hostname or "127.0.0.1", outer.url.port or 80), "root_path": ""}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive), path.removeprefix("/api/data/v9.2/")


def _http_part(response: Response, content_id: str | None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    reason = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified"}.get(response.status_code, "Error")
    head = [f"HTTP/1.1 {response.status_code} {reason}"]
    head += [f"{k}: {v}" for k, v in response.headers.items() if k.lower() not in ("content-length",)]
    body = bytes(response.body).decode() if response.body else ""
    return "\r\n".join(lines) + "\r\n\r\n" + "\r\n".join(head) + "\r\n\r\n" + body


async def run(state: DataverseState, request: Request, caller: identity.Caller, execute: Executor) -> Response:
    parts = parse(await request.body(), request.headers.get("content-type", ""))
    continue_on_error = "odata.continue-on-error" in (request.headers.get("prefer") or "")
    boundary = f"batchresponse_{uuid.uuid4()}"
    out: list[str] = []
    for part in parts:
        if part.operation is not None:
            response = await _one(state, request, part.operation, caller, execute, {})
            out.append(_http_part(response, part.operation.content_id))
            if response.status_code >= 400 and not continue_on_error:
                break
            continue
        text, failed = await _changeset(state, request, part.changeset, caller, execute)
        out.append(text)
        if failed and not continue_on_error:
            break
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in out) + f"--{boundary}--\r\n"
    return Response(body, status_code=200, media_type=f"multipart/mixed; boundary={boundary}",
                    headers={"OData-Version": "4.0"})


async def _one(state: DataverseState, outer: Request, op: Operation, caller: identity.Caller, execute: Executor,
               ids: dict[str, str]) -> Response:
    inner, path = _inner_request(outer, op, ids)
    try:
        return await execute(state, inner, path, caller)
    except errors.DataverseError as exc:
        return exc.response()


async def _changeset(state: DataverseState, outer: Request, ops: list[Operation], caller: identity.Caller,
                     execute: Executor) -> tuple[str, bool]:
    org = state.org
    touched = {t.logical for t in BY_SET.values()}  # cheap enough: shallow row copies of every table
    snapshot = {logical: {k: copy.copy(v) for k, v in org.store.rows[logical].items()} for logical in touched}
    held: list[Change] = []
    listeners = org.listeners
    org.listeners = [held.append]
    ids: dict[str, str] = {}
    responses: list[tuple[Response, str | None]] = []
    try:
        for op in ops:
            response = await _one(state, outer, op, caller, execute, ids)
            if response.status_code >= 400:
                org.store.rows.update(snapshot)
                held.clear()
                return _http_part(response, op.content_id), True
            if op.content_id and "odata-entityid" in response.headers:
                ids[op.content_id] = response.headers["odata-entityid"]
            responses.append((response, op.content_id))
    finally:
        org.listeners = listeners
    for change in held:
        for listener in listeners:
            listener(change)
    boundary = f"changesetresponse_{uuid.uuid4()}"
    inner = "".join(f"--{boundary}\r\n{_http_part(r, cid)}\r\n" for r, cid in responses) + f"--{boundary}--"
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{inner}", False
