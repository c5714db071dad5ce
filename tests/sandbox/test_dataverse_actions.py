"""Dataverse stand-in: FulfillSalesOrder / CancelSalesOrder, bound or unbound (fulfill_binding), with OrderClose."""

from __future__ import annotations

import pytest

try:
    from tests.sandbox.dataverse_helpers import API, Env, entity_id, make_env, nav
except ImportError:  # tests/sandbox collected as a rootless directory
    from dataverse_helpers import API, Env, entity_id, make_env, nav  # type: ignore[no-redef]

UNBOUND = {"FulfillSalesOrder": f"{API}/FulfillSalesOrder", "CancelSalesOrder": f"{API}/CancelSalesOrder"}
BOUND = {name: f"{API}/salesorders/Microsoft.Dynamics.CRM.{name}" for name in UNBOUND}


async def new_order(dv: Env) -> str:
    account = entity_id(await dv.service.post(f"{API}/accounts", json={"name": "Buyer"}))
    customer = await nav(dv.service, "salesorder", "customerid", "account")
    return entity_id(await dv.human.post(f"{API}/salesorders", json={
        "name": "Order", f"{customer}@odata.bind": f"/accounts({account})"}))


async def close_body(dv: Env, order: str, status: int, nav_name: str | None = None) -> dict[str, object]:
    nav_name = nav_name or await nav(dv.service, "orderclose", "salesorderid")
    return {"OrderClose": {"@odata.type": "Microsoft.Dynamics.CRM.orderclose", "subject": "Closed",
                           f"{nav_name}@odata.bind": f"/salesorders({order})", "actualend": "2025-01-31"},
            "Status": status}


async def state(dv: Env, order: str) -> tuple[int, int]:
    row = (await dv.service.get(f"{API}/salesorders({order})?$select=statecode,statuscode")).json()
    return row["statecode"], row["statuscode"]


@pytest.mark.parametrize("binding", ["unbound", "bound"])
async def test_only_the_readings_form_exists(binding: str) -> None:
    async with make_env(fulfill_binding=binding) as dv:
        works, missing = (UNBOUND, BOUND) if binding == "unbound" else (BOUND, UNBOUND)
        fulfilled, canceled = await new_order(dv), await new_order(dv)
        r = await dv.service.post(missing["FulfillSalesOrder"], json=await close_body(dv, fulfilled, 100001))
        assert r.status_code == 404
        segment = "FulfillSalesOrder" if binding == "bound" else "Microsoft.Dynamics.CRM.FulfillSalesOrder"
        assert r.json()["error"]["message"] == f"Resource not found for the segment '{segment}'."
        assert await state(dv, fulfilled) == (0, 1)
        assert (await dv.service.post(works["FulfillSalesOrder"], json=await close_body(dv, fulfilled, 100001))
                ).status_code == 204
        assert await state(dv, fulfilled) == (3, 100001)
        assert (await dv.service.post(works["CancelSalesOrder"], json=await close_body(dv, canceled, 4))
                ).status_code == 204
        assert await state(dv, canceled) == (2, 4)
        closes = (await dv.service.get(f"{API}/ordercloses?$select=subject,_salesorderid_value,statecode")).json()
        assert sorted(c["_salesorderid_value"] for c in closes["value"]) == sorted([fulfilled, canceled])
        assert {(c["subject"], c["statecode"]) for c in closes["value"]} == {("Closed", 1)}
        assert all("activityid" in c for c in closes["value"])


@pytest.mark.parametrize("style", ["lower", "pascal"])
async def test_order_close_binds_by_the_readings_name(style: str) -> None:
    async with make_env(nav_style=style) as dv:
        order = await new_order(dv)
        wrong = "SalesOrderId" if style == "lower" else "salesorderid"
        r = await dv.service.post(UNBOUND["FulfillSalesOrder"], json=await close_body(dv, order, 100001, wrong))
        assert r.status_code == 400 and r.json()["error"]["code"] == "0x80048d19"
        assert f"An undeclared property '{wrong}'" in r.json()["error"]["message"]
        assert await state(dv, order) == (0, 1)
        right = "salesorderid" if style == "lower" else "SalesOrderId"
        assert await nav(dv.service, "orderclose", "salesorderid") == right
        assert (await dv.service.post(UNBOUND["FulfillSalesOrder"], json=await close_body(dv, order, 100002))
                ).status_code == 204
        assert await state(dv, order) == (3, 100002)


async def test_bad_order_close_bodies() -> None:
    async with make_env() as dv:
        order = await new_order(dv)
        r = await dv.service.post(UNBOUND["FulfillSalesOrder"], json={"Status": 100001})
        assert r.status_code == 400
        r = await dv.service.post(UNBOUND["FulfillSalesOrder"], json={"OrderClose": {"subject": "x"}, "Status": 100001})
        assert r.status_code == 400
        missing = "00000000-0000-4000-8000-000000000001"
        r = await dv.service.post(UNBOUND["FulfillSalesOrder"], json=await close_body(dv, missing, 100001))
        assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"
        r = await dv.service.post(UNBOUND["FulfillSalesOrder"], json=await close_body(dv, order, 4))
        assert r.status_code == 400 and await state(dv, order) == (0, 1)  # 4 is no status of Fulfilled
        assert (await dv.service.get(f"{API}/ordercloses")).json()["value"] == []
        assert (await dv.service.post(UNBOUND["FulfillSalesOrder"], json=await close_body(dv, order, 100001))
                ).status_code == 204
        r = await dv.service.post(UNBOUND["CancelSalesOrder"], json=await close_body(dv, order, 4))
        assert r.status_code == 400  # already fulfilled


async def test_the_human_closes_orders_too() -> None:
    async with make_env(fulfill_binding="bound") as dv:
        order = await new_order(dv)
        r = await dv.human.post(BOUND["CancelSalesOrder"], json=await close_body(dv, order, 4))
        assert r.status_code == 204 and await state(dv, order) == (2, 4)


async def test_status_minus_one_is_the_default_and_deleting_the_order_removes_its_close() -> None:
    async with make_env() as dv:
        order = await new_order(dv)
        assert (await dv.service.post(UNBOUND["FulfillSalesOrder"], json=await close_body(dv, order, -1))
                ).status_code == 204
        assert await state(dv, order) == (3, 100001)
        assert len((await dv.service.get(f"{API}/ordercloses")).json()["value"]) == 1
        assert (await dv.service.delete(f"{API}/salesorders({order})")).status_code == 204
        assert (await dv.service.get(f"{API}/ordercloses")).json()["value"] == []
