"""SALESORDER-ORDER's document building: a Sales order, its lines and resolved references → BC's order, and
the writes that make an existing BC order the wanted one (no I/O)."""

from __future__ import annotations

from typing import Any

from consumers.rules.orders import document
from consumers.rules.orders.document import LineStep

CUSTOMER = "c0000000-0000-0000-0000-000000000001"
ITEM = {"lineType": "Item", "itemId": "i0000000-0000-0000-0000-000000000001"}


def order(**fields: Any) -> dict[str, Any]:
    return {"salesorderid": "S1", "name": "  PO-4711 for the spring campaign, second delivery  ",
            "requestdeliveryby": "2025-04-30T00:00:00Z", **fields}


def sales_line(line_id: str, **fields: Any) -> dict[str, Any]:
    return {"salesorderdetailid": line_id, "_productid_value": "P1", "quantity": 2, "priceperunit": 49.5,
            "manualdiscountamount": None, **fields}


def test_header_fields_addresses_currency_and_salesperson() -> None:
    header = document.header(order(billto_city="  Lyon ", shipto_name="x" * 120, shipto_line2=""), CUSTOMER,
                             {"currencyCode": "EUR"}, "JR")
    assert header == {"customerId": CUSTOMER, "externalDocumentNumber": "PO-4711 for the spring campaign, se",
                      "requestedDeliveryDate": "2025-04-30", "currencyCode": "EUR", "salesperson": "JR",
                      "billToCity": "Lyon", "shipToName": "x" * 100}  # BC lengths; blank parts left to BC


def test_header_without_date_currency_or_salesperson() -> None:
    header = document.header(order(requestdeliveryby=None), CUSTOMER, {}, "")
    assert header["requestedDeliveryDate"] == "0001-01-01"
    assert "currencyCode" not in header and "salesperson" not in header  # BC keeps the customer's


def test_item_line_with_price_discount_and_unit() -> None:
    line = document.line(sales_line("L1", manualdiscountamount="1.5"), 2, ITEM, "BOX")
    assert line == {"sequence": 20000, **ITEM, "quantity": 2.0, "discountAmount": 1.5, "unitPrice": 49.5,
                    "unitOfMeasureCode": "BOX"}
    assert "unitPrice" not in document.line(sales_line("L1", priceperunit=None), 1, ITEM)  # BC's price


def test_write_in_and_productless_lines_become_comments() -> None:
    write_in = sales_line("L1", isproductoverridden=True, productdescription="Gift wrap " + "y" * 200)
    assert document.is_write_in(write_in) and document.is_write_in(sales_line("L2", _productid_value=None))
    assert not document.is_write_in(sales_line("L3"))
    assert document.line(write_in, 3) == {"sequence": 30000, "lineType": "Comment",
                                          "description": ("Gift wrap " + "y" * 200)[:100]}
    assert document.line(sales_line("L2", _productid_value=None, description="Note"), 1)["description"] == "Note"


def test_lines_sort_by_number_then_creation_then_id() -> None:
    lines = [sales_line("b", lineitemnumber=2), sales_line("c", lineitemnumber=1, createdon="2025-01-02"),
             sales_line("a", lineitemnumber=1, createdon="2025-01-02"), sales_line("d")]
    assert [r["salesorderdetailid"] for r in document.sorted_lines(lines)] == ["d", "a", "c", "b"]


def test_shipped_and_fully_shipped() -> None:
    lines = [{"lineType": "Item", "quantity": 2, "shippedQuantity": 2},
             {"lineType": "Comment", "quantity": 0, "shippedQuantity": 0},
             {"lineType": "Item", "quantity": 3, "shippedQuantity": 0}]
    assert document.is_shipped({"salesOrderLines": lines}) and not document.fully_shipped({"salesOrderLines": lines})
    lines[2]["shippedQuantity"] = 3
    assert document.fully_shipped({"salesOrderLines": lines})
    assert not document.is_shipped({"salesOrderLines": []}) and not document.fully_shipped({"salesOrderLines": []})
    assert document.fully_shipped({"fullyShipped": True})


def test_header_changes_treat_the_local_currency_as_blank() -> None:
    target = {"currencyCode": "USD", "externalDocumentNumber": "PO-1", "shipToCity": "Paris"}
    wanted = {"currencyCode": "", "externalDocumentNumber": "PO-1", "shipToCity": "Lyon"}
    assert document.header_changes(target, wanted, "usd") == {"shipToCity": "Lyon"}
    assert document.header_changes(target, {**wanted, "currencyCode": "EUR"}, "USD") == {
        "currencyCode": "EUR", "shipToCity": "Lyon"}


def test_plan_patches_mapped_lines_adds_new_ones_and_removes_the_rest() -> None:
    target = {"id": "O", "externalDocumentNumber": "PO-1", "salesOrderLines": [
        {"id": "B1", "sequence": 10000, "lineType": "Item", "itemId": ITEM["itemId"], "quantity": 2.0},
        {"id": "B2", "sequence": 20000, "lineType": "Item", "itemId": ITEM["itemId"], "quantity": 3.0},
        {"id": "B3", "sequence": 30000, "lineType": "Comment", "description": "Gift wrap"}]}
    lines = [sales_line("s1"), sales_line("s2"), sales_line("s4")]
    bc_lines = [{"sequence": 10000, **ITEM, "quantity": 2.0}, {"sequence": 20000, **ITEM, "quantity": 7.0},
                {"sequence": 30000, **ITEM, "quantity": 1.0}]
    old_map = {"s1": "B1", "s2": "B2", "s3": "B3"}  # s3 (the write-in line) was deleted in Sales
    update = document.plan_update(target, {"externalDocumentNumber": "PO-2"}, lines, bc_lines, old_map, "USD")
    assert update.header == {"externalDocumentNumber": "PO-2"}
    assert update.steps == [LineStep("patch", "B2", "s2", {"quantity": 7.0}),
                            LineStep("add", None, "s4", bc_lines[2]), LineStep("remove", "B3")]
    assert update.kept == {"s1": "B1", "s2": "B2"}
    assert update.lines_summary() == "1 added, 1 changed, 1 removed" and bool(update)


def test_plan_pairs_unmapped_lines_by_sequence_and_replaces_a_changed_line_type() -> None:
    """An order matched (not created by us) has no line map: its lines pair with ours by sequence."""
    target = {"id": "O", "salesOrderLines": [
        {"id": "B1", "sequence": 10000, "lineType": "Item", "itemId": ITEM["itemId"], "quantity": 2.0},
        {"id": "B2", "sequence": 20000, "lineType": "Item", "itemId": ITEM["itemId"], "quantity": 1.0}]}
    lines = [sales_line("s1"), sales_line("s2", isproductoverridden=True, productdescription="Note")]
    bc_lines = [{"sequence": 10000, **ITEM, "quantity": 2.0},
                {"sequence": 20000, "lineType": "Comment", "description": "Note"}]
    update = document.plan_update(target, {}, lines, bc_lines, {}, "USD")
    assert update.steps == [LineStep("add", None, "s2", bc_lines[1]), LineStep("remove", "B2")]
    assert update.kept == {"s1": "B1"}


def test_nothing_to_write() -> None:
    target = {"id": "O", "shipToCity": "Lyon", "salesOrderLines": [
        {"id": "B1", "sequence": 10000, "lineType": "Item", "itemId": ITEM["itemId"], "quantity": 2.0}]}
    update = document.plan_update(target, {"shipToCity": "Lyon"}, [sales_line("S1")],
                                  [{"sequence": 10000, **ITEM, "quantity": 2.0}], {"s1": "B1"}, "USD")
    assert not update and update.lines_summary() is None and update.kept == {"s1": "B1"}
