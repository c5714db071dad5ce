"""Business rules of the Sales tables: initial states, allowed state changes, read-only records, computed
columns (full names, base-currency amounts, line and document totals).

Choices where the real platform was not verified are marked "unverified" and listed in the README.
"""

from __future__ import annotations

from typing import Any

from sandbox.dataverse import errors
from sandbox.dataverse.schema import MONEY, Table
from sandbox.dataverse.store import Row, Store
from sandbox.dataverse.values import EntityRef

STATE_COLUMNS = {"statecode", "statuscode"}

# Allowed status reasons per state; the first is the default when only statecode is written.
STATUSES: dict[str, dict[int, tuple[int, ...]]] = {
    "salesorder": {0: (1, 2), 1: (3,), 2: (4,), 3: (100001, 100002), 4: (100003,)},
    "invoice": {0: (1, 2, 4, 5, 6), 2: (100001, 100002), 3: (100003,)},
    "product": {0: (1,), 1: (2,), 2: (0,), 3: (3,)},
    "pricelevel": {0: (100001,), 1: (100002,)},
    "orderclose": {0: (1,), 1: (2,), 2: (3,)},  # Open, Completed, Canceled, as every activity
}
DEFAULT_STATUSES: dict[int, tuple[int, ...]] = {0: (1,), 1: (2,)}

# Dataverse refuses SetState for these and names the message to use instead.
SALESORDER_STATE_MESSAGES = {2: "CancelSalesOrderRequest", 3: "FulfillSalesOrderRequest"}
STATE_NAMES = {"salesorder": {2: "Canceled", 3: "Fulfilled"}}


def initial_state(table: Table, row: Row) -> None:
    """States on create are the platform's, whatever the body said (products start as Draft)."""
    if not table.has_state:
        return
    state = 2 if table.logical == "product" else 0
    row["statecode"] = state
    row["statuscode"] = STATUSES.get(table.logical, DEFAULT_STATUSES)[state][0]


def resolve_status(table: Table, changes: dict[str, Any], current_state: int) -> None:
    """Fill or check statuscode against the (new) statecode."""
    if "statecode" not in changes and "statuscode" not in changes:
        return
    state = changes.get("statecode", current_state)
    allowed = STATUSES.get(table.logical, DEFAULT_STATUSES)
    if state not in allowed:
        raise errors.invalid(f"{state} is not a valid state code on {table.logical}.")
    status = changes.get("statuscode")
    if status is None:
        changes["statuscode"] = allowed[state][0]
    elif status not in allowed[state]:
        raise errors.invalid(f"{status} is not a valid status code for state code {table.logical}State.{state}")


def check_update(table: Table, row: Row, changes: dict[str, Any], store: Store, via_action: bool = False) -> None:
    """Refuse edits Dataverse refuses: closed orders and invoices, lines of closed documents.
    `via_action` is FulfillSalesOrder/CancelSalesOrder, the messages allowed to close an order."""
    fields = set(changes) - STATE_COLUMNS
    state = row.get("statecode")
    if table.logical == "salesorder":
        new_state = changes.get("statecode")
        if new_state in SALESORDER_STATE_MESSAGES and not via_action:
            name = STATE_NAMES["salesorder"][new_state]
            raise errors.invalid(
                f"This message can not be used to set the state of salesorder to {name}. In order to set "
                f"state of salesorder to {name}, use the {SALESORDER_STATE_MESSAGES[new_state]} message instead.")
        if state != 0 and fields:
            raise errors.invalid(
                "The order cannot be updated because it is not in the Active state (submitted, fulfilled, "
                "invoiced and canceled orders are read-only).")
    if table.logical == "invoice" and state in (2, 3) and fields:
        raise errors.invalid("The invoice cannot be updated because it is paid or canceled (read-only).")
    check_parent_open(table, row, store)
    resolve_status(table, changes, state if isinstance(state, int) else 0)


def check_create(table: Table, row: Row, store: Store) -> None:
    """Registration rules of plug-in steps that Dataverse enforces when the step is created."""
    if table.logical != "sdkmessageprocessingstep":
        return
    if row.get("mode") == 1 and row.get("stage") != 40:
        raise errors.invalid("Asynchronous steps can only be registered on the PostOperation stage (40).")
    flt, message = row.get("sdkmessagefilterid"), row.get("sdkmessageid")
    if isinstance(flt, EntityRef) and isinstance(message, EntityRef):
        filter_row = store.get("sdkmessagefilter", flt.id) or {}
        owner = filter_row.get("sdkmessageid")
        if not isinstance(owner, EntityRef) or owner.id != message.id:
            raise errors.invalid("The sdkmessagefilter does not belong to the step's sdkmessage.")
    names = store.get("sdkmessage", message.id) if isinstance(message, EntityRef) else None
    if row.get("filteringattributes") and (names or {}).get("name") != "Update":
        raise errors.invalid("Filtering attributes are only valid for the Update message.")


def check_parent_open(table: Table, row: Row, store: Store) -> None:
    """Order lines change only while the order is Active; invoice lines only while not Paid/Canceled."""
    parent_column = {"salesorderdetail": "salesorderid", "invoicedetail": "invoiceid"}.get(table.logical)
    if parent_column is None:
        return
    ref = row.get(parent_column)
    if not isinstance(ref, EntityRef):
        return
    parent = store.get(ref.logical, ref.id)
    if parent is None:
        raise errors.not_found(ref.logical, ref.id)
    open_states = (0,) if table.logical == "salesorderdetail" else (0, 1)
    if parent.get("statecode") not in open_states:
        raise errors.invalid(f"The {ref.logical} is read-only in its current state; its lines cannot change.")


def derive(table: Table, row: Row, store: Store) -> None:
    """Recompute the columns Dataverse computes on every write."""
    if table.logical in ("contact", "systemuser"):
        full = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p)
        row["fullname"] = full or row.get("fullname")
    if table.logical in ("salesorderdetail", "invoicedetail"):
        quantity = row.get("quantity") or 0.0
        price = row.get("priceperunit")
        if price is None and isinstance(row.get("productid"), EntityRef):
            product = store.get("product", row["productid"].id) or {}
            price = product.get("price")
            row["priceperunit"] = price
        row["baseamount"] = round(quantity * (price or 0.0), 2)
        row["extendedamount"] = round(row["baseamount"] - (row.get("manualdiscountamount") or 0.0)
                                      + (row.get("tax") or 0.0), 2)
    rate = row.get("exchangerate") or 1.0
    for name, kind in table.columns.items():
        if kind == MONEY and not name.endswith("_base") and name in row:
            value = row[name]
            row[f"{name}_base"] = None if value is None else round(value / rate, 4)


def recompute_totals(store: Store, logical: str, record_id: str) -> Row | None:
    """Document totals from its lines (line column, then the parent's own discount and freight)."""
    parent = store.get(logical, record_id)
    if parent is None:
        return None
    line_table, column = ("salesorderdetail", "salesorderid") if logical == "salesorder" else (
        "invoicedetail", "invoiceid")
    lines = [r for r in store.all(line_table)
             if isinstance(r.get(column), EntityRef) and r[column].id == record_id]
    total_lines = round(sum(r.get("extendedamount") or 0.0 for r in lines), 2)
    parent["totallineitemamount"] = total_lines
    parent["totalamountlessfreight"] = round(total_lines - (parent.get("discountamount") or 0.0), 2)
    parent["totalamount"] = round(parent["totalamountlessfreight"] + (parent.get("freightamount") or 0.0)
                                  + (parent.get("totaltax") or 0.0), 2)
    return parent
