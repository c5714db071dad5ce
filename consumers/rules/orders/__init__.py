"""SALESORDER-ORDER: a Sales order that reaches Submitted becomes a BC sales order; BC's shipment comes back.

From Sales (Dataverse `salesorder` + `salesorderdetail`, statecode 1 Submitted):
- not coupled: one POST of the BC order with its lines inside (deep insert: all or nothing). The customer
  is the account's coupled customer (synchronized first if need be); item lines come from the products'
  coupled items (an uncoupled product is coupled to the item whose number is its `productnumber`);
  write-in products become Comment lines. Refused before anything is written: a blocked customer, a
  product without an item, a blocked item. The coupling keeps, in `info`, the BC order number and which
  BC line stands for which Sales line; the number is also written to the Sales column named by
  `BCSYNC_ORDER_NUMBER_COLUMN` when an installation has one.
- coupled: the BC order is updated (header and lines added/changed/removed, in one all-or-nothing
  `$batch` with `Isolation: snapshot`) while BC has shipped nothing of it; once anything is shipped a
  change is reported ("the order is already shipped in Business Central") and BC's order is left alone.
- canceled (statecode 2) or deleted: the mapping's delete policy — `remove-coupling` (default) or
  `propagate` (the BC order is deleted, unless shipped). `restore` acts as `remove-coupling` here.
A line's event is its order's event.

From BC (salesOrders notifications): a coupled order shipped completely makes the Sales order Fulfilled
(the `FulfillSalesOrder` action). A `deleted` notification of an order that BC posted (a posted invoice
names it in `orderId`) is not a cancellation: the coupling stays for POSTEDSALESINV-INV.

The package: document.py builds BC's order from plain data (no I/O); rule.py reads, resolves and writes.
"""

from __future__ import annotations

from consumers.rules.orders.document import (
    ADDRESS_PARTS,
    CANCELED,
    FULFILLED,
    SUBMITTED,
    date_only,
    fully_shipped,
    is_shipped,
)
from consumers.rules.orders.rule import SHIPPED_MESSAGE, OrderRule, posted_invoice_of

__all__ = ["ADDRESS_PARTS", "CANCELED", "FULFILLED", "SHIPPED_MESSAGE", "SUBMITTED", "OrderRule", "date_only",
           "fully_shipped", "is_shipped", "posted_invoice_of"]
