"""FulfillSalesOrder and CancelSalesOrder: close a sales order with an OrderClose activity.

Body: {"OrderClose": {"@odata.type": "Microsoft.Dynamics.CRM.orderclose", "subject": "..",
"salesorderid@odata.bind": "/salesorders(<id>)"}, "Status": n} (CRM 2016 "FulfillSalesOrder Action":
OrderClose orderclose EntityType, Status Edm.Int32; the bind as in community samples). The OrderClose is read
like any orderclose body, so its navigation name follows `nav_style` (salesorderid | SalesOrderId).

Binding is a reading (`fulfill_binding`): the 2017 D365 CE salesorder EntityType reference lists both actions
as "Not Bound" (POST /FulfillSalesOrder); the CRM 2016 Web API reference binds them to the salesorder
collection (POST /salesorders/Microsoft.Dynamics.CRM.FulfillSalesOrder). Only the reading's form exists; the
other answers 404 as OData does for a segment it cannot resolve.
"""

from __future__ import annotations

from typing import Any

from sandbox.dataverse import errors, identity
from sandbox.dataverse.engine import Organization
from sandbox.dataverse.representation import parse_body
from sandbox.dataverse.schema import TABLES

ACTIONS = ("FulfillSalesOrder", "CancelSalesOrder")
BOUND_PREFIX = "salesorders/Microsoft.Dynamics.CRM."
UNBOUND, BOUND = "unbound", "bound"


def resolve(path: str, binding: str) -> str | None:
    """The action a POST path names in this reading; None when the path is no action; 404 for the wrong form."""
    if path in ACTIONS:
        if binding == BOUND:
            raise errors.DataverseError(404, errors.BAD_QUERY, f"Resource not found for the segment '{path}'.")
        return path
    if path.startswith(BOUND_PREFIX) and path.removeprefix(BOUND_PREFIX) in ACTIONS:
        if binding != BOUND:
            segment = path.removeprefix("salesorders/")
            raise errors.DataverseError(404, errors.BAD_QUERY, f"Resource not found for the segment '{segment}'.")
        return path.removeprefix(BOUND_PREFIX)
    return None


def close_order(org: Organization, action: str, body: Any, caller: identity.Caller, tag: str | None,
                nav_style: str) -> None:
    """Close the order (Fulfilled 3 or Canceled 2) and record the OrderClose activity, Completed."""
    order_close = body.get("OrderClose") if isinstance(body, dict) else None
    if not isinstance(order_close, dict):
        raise errors.DataverseError(400, errors.BAD_PAYLOAD, "The OrderClose parameter is required.")
    attrs = parse_body(TABLES["orderclose"], order_close, org.store, nav_style)
    ref = attrs.get("salesorderid")
    if ref is None:
        raise errors.DataverseError(400, errors.BAD_PAYLOAD, "OrderClose must reference its sales order.")
    order = org.store.get("salesorder", ref.id)
    if order is None:
        raise errors.not_found("salesorder", ref.id)
    if order.get("statecode") not in (0, 1):
        raise errors.invalid("Only active or submitted orders can be closed.")
    state = 3 if action == "FulfillSalesOrder" else 2
    status = body.get("Status", 100001 if state == 3 else 4)
    if not isinstance(status, int) or isinstance(status, bool):
        raise errors.DataverseError(400, errors.BAD_PAYLOAD, f"Cannot convert '{status}' to Edm.Int32 (Status).")
    # -1 asks for the state's default status, as it does for SetState (unverified for these two actions).
    changes = {"statecode": state} if status == -1 else {"statecode": state, "statuscode": status}
    org.update("salesorder", ref.id, changes, caller, tag, via_action=True)
    attrs.pop("activityid", None)
    activity = org.create("orderclose", attrs, caller, tag)
    # The activity is recorded closed (unverified: Completed 1/2 as other close activities).
    activity.update({"statecode": 1, "statuscode": 2})
