"""The Web API v9.2 routes: entity sets, single rows, table definitions, WhoAmI and the sales order actions.

Each request is authenticated (bearer token of the integration's app → its application user), counted
against the service-protection budget, subjected to injected faults, then executed and logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.dataverse import actions, batch, errors, identity, metadata, query
from sandbox.dataverse.engine import Organization
from sandbox.dataverse.representation import etag, parse_body, to_json
from sandbox.dataverse.schema import BY_SET, Table
from sandbox.dataverse.state import DataverseState
from sandbox.dataverse.values import iso, normalize_guid, now
from sandbox.tokens import TokenError

API_ROOT = "/api/data/v9.2"
MAX_PAGE = 5000
_KEYED = re.compile(r"^([A-Za-z_]\w*)\(([0-9a-fA-F-]{36})\)$")
_MAXPAGE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)")
ODATA = {"OData-Version": "4.0"}


def router(state: DataverseState) -> APIRouter:
    api = APIRouter()

    @api.api_route(API_ROOT + "/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"])
    async def web_api(path: str, request: Request) -> Response:
        started = time.perf_counter()
        caller: identity.Caller | None = None
        try:
            caller = authenticate(state, request)
            wait = state.budget.retry_after(caller.user_id)
            if wait is not None:
                raise errors.DataverseError(
                    429, errors.THROTTLED,
                    f"Number of requests exceeded the limit of {state.budget.requests} over time window of "
                    f"{int(state.budget.window)} seconds.", {"Retry-After": str(max(int(wait + 0.999), 1))})
            await inject_faults(state, request.method, path)
            response = await execute(state, request, path, caller)
        except errors.DataverseError as exc:
            response = exc.response()
        log(state, request, path, caller, response.status_code, started)
        return response

    return api


def authenticate(state: DataverseState, request: Request) -> identity.Caller:
    header = request.headers.get("authorization")
    for audience in state.audiences:
        try:
            claims = state.tokens.validate(header, audience)
            break
        except TokenError:
            continue
    else:
        base = f"http://127.0.0.1:{state.config.dataverse_port}"
        raise errors.DataverseError(401, "0x80072560", "The user is not authenticated.", {
            "WWW-Authenticate": f"Bearer authorization_uri={state.tokens.issuer_host}/{state.config.tenant_id}"
                                f"/oauth2/authorize, resource_id={base}/"})
    caller = state.org.caller_for_application(str(claims.get("appid") or claims.get("azp") or ""))
    if caller is None:
        raise errors.DataverseError(403, errors.NOT_MEMBER, "The user is not a member of the organization.")
    return caller


async def inject_faults(state: DataverseState, method: str, path: str) -> None:
    faults = state.faults
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    rule = faults.take(method, path)
    if rule is None:
        return
    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
    if rule.status == 429:
        raise errors.DataverseError(429, errors.THROTTLED, "Number of requests exceeded the limit (injected).",
                                    headers)
    raise errors.DataverseError(rule.status, errors.UNEXPECTED, f"Injected fault {rule.status}.", headers)


def log(state: DataverseState, request: Request, path: str, caller: identity.Caller | None, status: int,
        started: float) -> None:
    state.requests.append({
        "at": iso(now()), "method": request.method, "path": f"{API_ROOT}/{path}",
        "query": str(request.url.query), "status": status, "user_id": caller.user_id if caller else None,
        "prefer": request.headers.get("prefer"), "if_match": request.headers.get("if-match"),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    })
    state.requests_total += 1


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + API_ROOT


async def execute(state: DataverseState, request: Request, path: str, caller: identity.Caller) -> Response:
    org = state.org
    method = request.method
    params = request.query_params
    tag = params.get("tag")
    if path in ("WhoAmI", "WhoAmI()") and method == "GET":
        return JSONResponse({
            "@odata.context": f"{base_url(request)}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
            "BusinessUnitId": identity.BUSINESS_UNIT_ID, "UserId": caller.user_id,
            "OrganizationId": identity.ORGANIZATION_ID}, headers=ODATA)
    nav_style = state.config.nav_style
    action = actions.resolve(path, state.config.fulfill_binding) if method == "POST" else None
    if action is not None:
        actions.close_order(org, action, await read_json(request), caller, tag, nav_style)
        return Response(status_code=204, headers=ODATA)
    if path.startswith("EntityDefinitions"):
        return metadata.respond(request, path, nav_style)
    if path == "$batch" and method == "POST":
        return await batch.run(state, request, caller, execute)
    keyed = _KEYED.match(path)
    set_name = keyed.group(1) if keyed else path
    table = BY_SET.get(set_name)
    if table is None:
        raise errors.DataverseError(404, errors.BAD_QUERY, f"Resource not found for the segment '{set_name}'.")
    if keyed is None:
        if method == "GET":
            return read_collection(state, request, table)
        if method == "POST":
            attrs = parse_body(table, await read_json(request), org.store, nav_style)
            record_id = attrs.pop(table.primary_id, None)
            new_row = org.create(table.logical, attrs, caller, tag, record_id=record_id)
            return written(request, table, new_row, org, nav_style, created=True)
        raise errors.DataverseError(405, errors.BAD_QUERY, f"{method} is not allowed on a collection.")
    try:
        record_id = normalize_guid(keyed.group(2))
    except ValueError as exc:
        raise errors.bad_query(f"Bad key in '{path}'.") from exc
    row = org.store.get(table.logical, record_id)
    if method == "GET":
        if row is None:
            raise errors.not_found(table.logical, record_id)
        if request.headers.get("if-none-match") == etag(row):
            return Response(status_code=304, headers=ODATA)
        select = query.parse_select(table, params.get("$select"))
        body = {"@odata.context": f"{base_url(request)}/$metadata#{table.entity_set}/$entity",
                **to_json(table, row, select, org.store, wants_annotations(request), nav_style)}
        return JSONResponse(body, headers=ODATA)
    check_preconditions(request, table, row, record_id)
    if method == "DELETE":
        org.delete(table.logical, record_id, caller, tag)
        return Response(status_code=204, headers=ODATA)
    attrs = parse_body(table, await read_json(request), org.store, nav_style)
    attrs.pop(table.primary_id, None)
    if row is None:
        created = org.create(table.logical, attrs, caller, tag, record_id=record_id)
        return written(request, table, created, org, nav_style, created=True)
    updated = org.update(table.logical, record_id, attrs, caller, tag)
    return written(request, table, updated, org, nav_style, created=False)


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise errors.DataverseError(400, errors.BAD_PAYLOAD, f"Invalid JSON in the request body: {exc}") from exc


def check_preconditions(request: Request, table: Table, row: dict[str, Any] | None, record_id: str) -> None:
    if_match = request.headers.get("if-match")
    if_none_match = request.headers.get("if-none-match")
    if request.method == "DELETE" and row is None:
        raise errors.not_found(table.logical, record_id)
    if if_match is not None:
        if row is None:
            raise errors.not_found(table.logical, record_id)
        if if_match.strip() != "*" and if_match.strip() not in (etag(row), f'"{row["versionnumber"]}"'):
            raise errors.DataverseError(412, errors.ROW_VERSION,
                                        "The version of the existing record doesn't match the RowVersion "
                                        "property provided.")
    if if_none_match is not None and if_none_match.strip() == "*" and row is not None:
        raise errors.DataverseError(412, errors.DUPLICATE, "A record with matching key values already exists.")


def wants_annotations(request: Request) -> bool:
    return "odata.include-annotations" in (request.headers.get("prefer") or "")


def written(request: Request, table: Table, row: dict[str, Any], org: Organization, nav_style: str,
            created: bool) -> Response:
    entity_id = f"{base_url(request)}/{table.entity_set}({row[table.primary_id]})"
    headers = {**ODATA, "OData-EntityId": entity_id}
    if "return=representation" in (request.headers.get("prefer") or ""):
        select = query.parse_select(table, request.query_params.get("$select"))
        body = {"@odata.context": f"{base_url(request)}/$metadata#{table.entity_set}/$entity",
                **to_json(table, row, select, org.store, wants_annotations(request), nav_style)}
        headers["Preference-Applied"] = "return=representation"
        headers["ETag"] = etag(row)
        return JSONResponse(body, status_code=201 if created else 200, headers=headers)
    return Response(status_code=204, headers=headers)


def read_collection(state: DataverseState, request: Request, table: Table) -> Response:
    params = request.query_params
    if "$skip" in params:
        raise errors.bad_query("Skip Clause is not supported in CRM")
    if "$expand" in params or "$apply" in params:
        raise errors.bad_query("$expand and $apply are not supported by the sandbox.")
    select = query.parse_select(table, params.get("$select"))
    predicate = query.parse_filter(table, params.get("$filter"))
    keys = query.parse_orderby(table, params.get("$orderby"))
    rows = query.sort_rows(table, [r for r in state.org.store.all(table.logical) if predicate(r)], keys)
    prefer = request.headers.get("prefer") or ""
    size_match = _MAXPAGE.search(prefer)
    page_size = min(max(int(size_match.group(1)), 1), MAX_PAGE) if size_match else MAX_PAGE
    headers = dict(ODATA)
    applied = []
    if size_match:
        applied.append(f"odata.maxpagesize={page_size}")
    with_annotations = wants_annotations(request)
    if with_annotations:
        applied.append('odata.include-annotations="*"')
    if applied:
        headers["Preference-Applied"] = ",".join(applied)
    offset = decode_skiptoken(params.get("$skiptoken"))
    total = len(rows)
    top = params.get("$top")
    if top is not None:
        if not top.isdigit():
            raise errors.bad_query(f"Invalid value '{top}' for $top.")
        page, more = rows[: min(int(top), MAX_PAGE)], False  # $top disables paging, as in Dataverse
    else:
        page, more = rows[offset: offset + page_size], offset + page_size < total
    context = f"{base_url(request)}/$metadata#{table.entity_set}"
    if select:
        context += f"({','.join(select)})"
    body: dict[str, Any] = {"@odata.context": context}
    if params.get("$count") == "true":
        body["@odata.count"] = min(total, 5000)
    body["value"] = [to_json(table, r, select, state.org.store, with_annotations, state.config.nav_style)
                     for r in page]
    if more:
        body["@odata.nextLink"] = next_link(request, table, offset + page_size)
    return JSONResponse(body, headers=headers)


def decode_skiptoken(token: str | None) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        return int(data["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_query("Invalid $skiptoken.") from exc


def next_link(request: Request, table: Table, offset: int) -> str:
    # Opaque to clients, like Dataverse's paging cookie; it carries where the next page starts.
    token = base64.urlsafe_b64encode(json.dumps({"offset": offset, "page": 1}).encode()).decode().rstrip("=")
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
    params.append(("$skiptoken", token))
    query = urllib.parse.urlencode(params, safe="$,()':", quote_via=urllib.parse.quote)
    return f"{base_url(request)}/{table.entity_set}?{query}"
