"""The webhook routes of the API: `…/api/<api>/subscriptions[('<id>')]` and
`…/api/microsoft/runtime/beta/companies(<id>)/webhookSupportedResources`."""

from __future__ import annotations

import fnmatch
import re

from sandbox.bc.calls import Call, Reply, method_not_allowed
from sandbox.bc.entities import EntityDef
from sandbox.bc.errors import no_route
from sandbox.bc.query import parse_filter
from sandbox.bc.runtime import BCSandbox

# Page 5460 "Webhook Supported Resources": EntityName webhookSupportedResource, one field `resource`.
SUPPORTED = EntityDef("webhookSupportedResources", "Name/Value Buffer", {"resource": ""},
                      entity="webhookSupportedResource", subscribable=False)
# Page "Working with webhooks in Dynamics 365 Business Central" filters with a wildcard:
# `$filter=resource eq 'v2.0*'` (an AL filter expression inside an OData literal).
_WILDCARD = re.compile(r"^\s*resource\s+eq\s+'(?P<pattern>[^']*\*[^']*)'\s*$")


async def subscriptions(sb: BCSandbox, call: Call, api: str, key: str | None) -> Reply:
    hooks = sb.webhooks
    body = call.body if isinstance(call.body, dict) else {}
    context = f"{call.base}/{api}/$metadata#subscriptions"
    if key is None:
        if call.method == "GET":
            hooks.expire()
            return Reply(200, {"@odata.context": context, "value": [s.to_json() for s in hooks.subs.values()]})
        if call.method == "POST":
            sub = await hooks.create(body, api, call.base)
            return Reply(201, {"@odata.context": context + "/$entity", **sub.to_json()}, {"ETag": sub.etag})
        raise method_not_allowed(call.method)
    if call.method == "GET":
        return Reply(200, {"@odata.context": context + "/$entity", **hooks.get(key).to_json()})
    if call.method == "PATCH":
        sub = await hooks.renew(key, body, call.headers.get("if-match"))
        return Reply(200, {"@odata.context": context + "/$entity", **sub.to_json()}, {"ETag": sub.etag})
    if call.method == "DELETE":
        hooks.delete(key, call.headers.get("if-match"))
        return Reply(204)
    raise method_not_allowed(call.method)


def supported_resources(sb: BCSandbox, call: Call, segs: list[tuple[str, str | None]]) -> Reply:
    """`microsoft/runtime/beta/companies(<id>)/webhookSupportedResources` → {"value":[{"resource":"v2.0/…"}]}."""
    if (len(segs) != 2 or segs[0][0] != "companies" or segs[1] != ("webhookSupportedResources", None)
            or (segs[0][1] or "").strip("'").lower() != sb.company_id):
        raise no_route(call.url)
    if call.method != "GET":
        raise method_not_allowed(call.method)
    rows = [{"resource": name} for name in sb.webhooks.supported_resources()]
    text = call.query.get("$filter")
    wildcard = _WILDCARD.match(text or "")
    if wildcard:
        rows = [r for r in rows if fnmatch.fnmatchcase(r["resource"].lower(), wildcard["pattern"].lower())]
    elif text:
        predicate = parse_filter(SUPPORTED, text)
        rows = [r for r in rows if predicate is None or predicate(r)]
    context = f"{call.base}/microsoft/runtime/beta/$metadata#companies({sb.company_id})/webhookSupportedResources"
    return Reply(200, {"@odata.context": context, "value": rows})
