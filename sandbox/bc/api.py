"""The OData request dispatcher: one function for HTTP requests and `$batch` operations alike.

`dispatch` takes the path after `/v2.0/<tenant>/<environment>/api/` (e.g. `v2.0/companies(<id>)/customers`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from sandbox.bc import documents
from sandbox.bc.entities import CUSTOM, ENTITIES, LINES_OF, V2, EntityDef, entity_for
from sandbox.bc.errors import BCError, bad_request, not_found
from sandbox.bc.query import (
    MAX_PAGE,
    Predicate,
    decode_skiptoken,
    encode_skiptoken,
    page_size,
    parse_filter,
    parse_orderby,
    parse_select,
)
from sandbox.bc.runtime import BCSandbox
from sandbox.bc.store import Row

_SEGMENT = re.compile(r"^(?P<name>[\w.$]+)(?:\((?P<key>[^)]*)\))?$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_APIS = {"v2.0": V2, "bcsync/integration/v1.0": CUSTOM}
CONTACT_INFO = EntityDef("contactsInformation", "Contact Information", {
    "contactId": "", "contactNumber": "", "contactName": "", "contactType": "", "relatedId": "",
    "relatedType": "",
}, subscribable=False)


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    method: str
    path: str  # after `/api/`, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    base: str  # `http://host/v2.0/<tenant>/<env>/api`, for nextLink and @odata.context


def error_reply(exc: BCError) -> Reply:
    return Reply(exc.status, exc.body(), dict(exc.headers))


async def dispatch(sb: BCSandbox, call: Call) -> Reply:
    try:
        return await _route(sb, call)
    except BCError as exc:
        return error_reply(exc)


def _segments(path: str) -> list[tuple[str, str | None]]:
    out = []
    for part in path.strip("/").split("/"):
        match = _SEGMENT.match(part)
        if not match:
            raise bad_request("Bad Request - Error in query syntax.")
        out.append((match.group("name"), match.group("key")))
    return out


def _no_route() -> BCError:
    return BCError(404, "BadRequest_NotFound", "No HTTP resource was found that matches the request URI.")


def _method_not_allowed(method: str) -> BCError:
    return BCError(405, "BadRequest_MethodNotAllowed", f"'{method}' requests are not allowed here.")


async def _route(sb: BCSandbox, call: Call) -> Reply:
    api_name = next((name for name in _APIS if call.path.startswith(name + "/")), None)
    if call.path.startswith("microsoft/runtime/beta/"):
        return _runtime(sb, call, _segments(call.path[len("microsoft/runtime/beta/"):]))
    if api_name is None:
        raise _no_route()
    api = _APIS[api_name]
    segs = _segments(call.path[len(api_name) + 1:])
    if segs[0][0] == "subscriptions" and len(segs) == 1:
        return await _subscriptions(sb, call, api, segs[0][1])
    if segs[0][0] != "companies":
        raise _no_route()
    company = segs[0][1]
    if company is None:
        if call.method != "GET" or len(segs) > 1:
            raise _method_not_allowed(call.method)
        return Reply(200, {"@odata.context": f"{call.base}/{api_name}/$metadata#companies",
                           "value": [_company(sb)]})
    if company.strip("'").lower() != sb.company_id:
        raise BCError(404, "Internal_CompanyNotFound", f"The company '{company}' does not exist.")
    if len(segs) == 1:
        return Reply(200, _company(sb))
    return await _entity_route(sb, call, api, api_name, segs[1:])


def _company(sb: BCSandbox) -> dict[str, Any]:
    return {"id": sb.company_id, "systemVersion": "26.0.30643.32525", "name": "CRONUS USA, Inc.",
            "displayName": "CRONUS USA, Inc.", "businessProfileId": "",
            "systemCreatedAt": "2025-01-01T00:00:00Z", "systemModifiedAt": "2025-01-01T00:00:00Z"}


async def _entity_route(sb: BCSandbox, call: Call, api: str, api_name: str,
                        segs: list[tuple[str, str | None]]) -> Reply:
    context = f"{call.base}/{api_name}/$metadata#companies({sb.company_id})"
    (name, key), rest = segs[0], segs[1:]
    if name == "contactsInformation" and api == V2 and key is None and not rest:
        return _list_plain(call, CONTACT_INFO, sb.records.contacts_information())
    entity = entity_for(api, name)
    if entity is None:
        raise _no_route()
    if key is None:
        if rest:
            raise _no_route()
        return _collection(sb, call, entity, None, f"{context}/{name}")
    row_id = _key(key)
    if not rest:
        return _single(sb, call, entity, row_id, f"{context}/{name}/$entity")
    (child, child_key), rest = rest[0], rest[1:]
    if rest:
        raise _no_route()
    if child.startswith("Microsoft.NAV.") and child_key is None:
        return _action(sb, call, entity, row_id, child[len("Microsoft.NAV."):])
    if entity.name == "customers" and child == "contactsInformation" and child_key is None:
        sb.records.get("customers", row_id)
        return _list_plain(call, CONTACT_INFO, sb.records.contacts_information(row_id))
    if LINES_OF.get(entity.name) != child:
        raise _no_route()
    header = sb.records.get(entity.name, row_id)
    lines = ENTITIES[child]
    if child_key is None:
        return _collection(sb, call, lines, header.data["id"], f"{context}/{child}")
    line_id = _key(child_key)
    if sb.records.get(child, line_id).data["documentId"] != header.data["id"]:
        raise not_found(lines.caption, line_id)
    return _single(sb, call, lines, line_id, f"{context}/{child}/$entity")


def _key(key: str) -> str:
    key = key.strip("'")
    if key.startswith("id="):
        key = key[3:]
    if not _GUID.match(key):
        raise bad_request("Bad Request - Error in query syntax.")
    return key.lower()


def out(row: Row, select: list[str] | None = None) -> dict[str, Any]:
    if select is None:
        return {"@odata.etag": row.etag, **row.data}
    return {"@odata.etag": row.etag, **{k: row.data[k] for k in select}}


def _collection(sb: BCSandbox, call: Call, entity: EntityDef, parent_id: str | None, context: str) -> Reply:
    if call.method == "POST":
        if not isinstance(call.body, dict):
            raise bad_request("The request body must be a JSON object.")
        row = sb.records.create(entity.name, call.body, parent_id=parent_id)
        body = {"@odata.context": context + "/$entity", **_expand(sb, entity, row, out(row), call)}
        return Reply(201, body, {"ETag": row.etag, "Location": f"{context}({row.data['id']})"})
    if call.method != "GET":
        raise _method_not_allowed(call.method)
    rows: Collection[Row] = sb.store.table(entity.name).rows.values()
    if parent_id is not None:
        rows = documents.lines_of(sb.records, entity.parent or "", parent_id)
    return _page(sb, call, entity, rows, context)


def _page(sb: BCSandbox, call: Call, entity: EntityDef, rows: Collection[Row], context: str) -> Reply:
    q = call.query
    predicate = parse_filter(entity, q.get("$filter"))
    select = parse_select(entity, q.get("$select"))
    order = parse_orderby(entity, q.get("$orderby"))
    prefer = page_size(call.headers.get("prefer"))
    state = decode_skiptoken(q["$skiptoken"]) if q.get("$skiptoken") else {}
    size = int(state.get("size") or prefer or MAX_PAGE)
    left = state.get("left")
    if left is None and q.get("$top"):
        left = _int(q["$top"], "$top")
    skip = 0 if state else _int(q.get("$skip") or "0", "$skip")
    take = size if left is None else min(size, int(left))
    if order:
        picked, more, cursor = _ordered_page(rows, predicate, order, int(state.get("off", 0)) + skip, take)
    else:
        picked, more, cursor = _seq_page(rows, predicate, int(state.get("seq", 0)), skip, take)
    body: dict[str, Any] = {"@odata.context": context}
    if q.get("$count") == "true":
        body["@odata.count"] = sum(1 for r in rows if predicate is None or predicate(r.data))
    body["value"] = [_expand(sb, entity, r, out(r, select), call) for r in picked]
    remaining = None if left is None else int(left) - len(picked)
    if more and picked and (remaining is None or remaining > 0):
        token = encode_skiptoken({**cursor, "left": remaining, "size": size})
        params = {k: v for k, v in q.items() if k not in ("$skiptoken", "$top", "$skip")}
        params["$skiptoken"] = token
        path = call.base + "/" + call.path
        body["@odata.nextLink"] = path + "?" + urlencode(params, quote_via=quote, safe="$(),':")
    headers = {"Preference-Applied": f"odata.maxpagesize={prefer}"} if prefer else {}
    return Reply(200, body, headers)


def _seq_page(rows: Iterable[Row], predicate: Predicate | None, after: int, skip: int,
              take: int) -> tuple[list[Row], bool, dict[str, int]]:
    """Key order; the cursor is the last row's insertion number, so deletes never shift a page."""
    picked: list[Row] = []
    for row in rows:
        if row.seq <= after or (predicate is not None and not predicate(row.data)):
            continue
        if skip:
            skip -= 1
            continue
        if len(picked) == take:
            return picked, True, {"seq": picked[-1].seq}
        picked.append(row)
    return picked, False, {}


def _ordered_page(rows: Iterable[Row], predicate: Predicate | None, order: list[tuple[str, bool]],
                  offset: int, take: int) -> tuple[list[Row], bool, dict[str, int]]:
    matching = [r for r in rows if predicate is None or predicate(r.data)]
    for name, descending in reversed(order):  # stable sorts, last key first
        matching.sort(key=lambda r, n=name: r.data[n], reverse=descending)  # type: ignore[misc]
    picked = matching[offset:offset + take]
    return picked, offset + take < len(matching), {"off": offset + len(picked)}


def _int(text: str, option: str) -> int:
    if not text.isdigit():
        raise bad_request(f"Invalid value '{text}' for {option}.")
    return int(text)


def _expand(sb: BCSandbox, entity: EntityDef, row: Row, data: dict[str, Any], call: Call) -> dict[str, Any]:
    expand = call.query.get("$expand")
    if not expand:
        return data
    for name in (part.strip() for part in expand.split(",")):
        if LINES_OF.get(entity.name) != name:
            raise bad_request(f"Could not find a property named '{name}' on type "
                              f"'Microsoft.NAV.{entity.name[:-1]}'.")
        data[name] = [out(r) for r in documents.lines_of(sb.records, entity.name, row.data["id"])]
    return data


def _list_plain(call: Call, entity: EntityDef, items: list[dict[str, Any]]) -> Reply:
    if call.method != "GET":
        raise _method_not_allowed(call.method)
    predicate = parse_filter(entity, call.query.get("$filter"))
    return Reply(200, {"value": [i for i in items if predicate is None or predicate(i)]})


def _single(sb: BCSandbox, call: Call, entity: EntityDef, row_id: str, context: str) -> Reply:
    if_match = call.headers.get("if-match")
    if call.method == "GET":
        row = sb.records.get(entity.name, row_id)
        select = parse_select(entity, call.query.get("$select"))
        data = _expand(sb, entity, row, out(row, select), call)
        return Reply(200, {"@odata.context": context, **data}, {"ETag": row.etag})
    if call.method in ("PATCH", "PUT"):
        if not isinstance(call.body, dict):
            raise bad_request("The request body must be a JSON object.")
        row = sb.records.update(entity.name, row_id, call.body, if_match)
        return Reply(200, {"@odata.context": context, **out(row)}, {"ETag": row.etag})
    if call.method == "DELETE":
        sb.records.delete(entity.name, row_id, if_match)
        return Reply(204)
    raise _method_not_allowed(call.method)


def _action(sb: BCSandbox, call: Call, entity: EntityDef, row_id: str, action: str) -> Reply:
    if call.method != "POST":
        raise _method_not_allowed(call.method)
    records = sb.records
    if entity.name == "salesOrders" and action == "shipAndInvoice":
        documents.ship_and_invoice(records, row_id)
    elif entity.name == "salesInvoices" and action in ("post", "postAndSend"):
        documents.post_invoice(records, row_id)
    elif entity.name == "salesInvoices" and action in ("cancel", "cancelAndSend"):
        documents.cancel_invoice(records, row_id)
    elif entity.name == "salesInvoices" and action == "send":
        records.get(entity.name, row_id)
    else:
        raise _no_route()
    return Reply(204)


async def _subscriptions(sb: BCSandbox, call: Call, api: str, key: str | None) -> Reply:
    hooks = sb.webhooks
    body = call.body if isinstance(call.body, dict) else {}
    context = f"{call.base}/v2.0/$metadata#subscriptions"
    if key is None:
        if call.method == "GET":
            hooks.expire()
            return Reply(200, {"@odata.context": context, "value": [s.to_json() for s in hooks.subs.values()]})
        if call.method == "POST":
            sub = await hooks.create(body, api)
            return Reply(201, {"@odata.context": context + "/$entity", **sub.to_json()}, {"ETag": sub.etag})
        raise _method_not_allowed(call.method)
    if call.method == "GET":
        return Reply(200, {"@odata.context": context + "/$entity", **hooks.get(key).to_json()})
    if call.method == "PATCH":
        sub = await hooks.renew(key, body, call.headers.get("if-match"))
        return Reply(200, {"@odata.context": context + "/$entity", **sub.to_json()}, {"ETag": sub.etag})
    if call.method == "DELETE":
        hooks.delete(key, call.headers.get("if-match"))
        return Reply(204)
    raise _method_not_allowed(call.method)


def _runtime(sb: BCSandbox, call: Call, segs: list[tuple[str, str | None]]) -> Reply:
    """`microsoft/runtime/beta/companies(<id>)/webhookSupportedResources`."""
    if (len(segs) != 2 or segs[0][0] != "companies" or segs[1] != ("webhookSupportedResources", None)
            or (segs[0][1] or "").strip("'").lower() != sb.company_id):
        raise _no_route()
    names = [f"{'v2.0' if e.api == V2 else e.api}/{e.name}" for e in ENTITIES.values() if e.subscribable]
    return Reply(200, {"value": [{"resource": name} for name in names]})
