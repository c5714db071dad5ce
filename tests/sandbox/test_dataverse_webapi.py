"""Dataverse stand-in: Web API v9.2 semantics (auth, writes, concurrency, lookups, queries, paging, rules)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

try:
    from tests.sandbox.dataverse_helpers import API, Env, entity_id, make_env, register_webhook
except ImportError:  # tests/sandbox collected as a rootless directory
    from dataverse_helpers import API, Env, entity_id, make_env, register_webhook  # type: ignore[no-redef]

from sandbox.dataverse import identity


@pytest.fixture
async def dv() -> AsyncIterator[Env]:
    async with make_env() as env:
        yield env


async def test_whoami_is_the_application_user(dv: Env) -> None:
    r = await dv.service.get(f"{API}/WhoAmI")
    assert r.status_code == 200
    body = r.json()
    assert body["OrganizationId"] == identity.ORGANIZATION_ID
    assert body["BusinessUnitId"] == identity.BUSINESS_UNIT_ID
    assert body["UserId"] != dv.config.client_id
    user = (await dv.service.get(f"{API}/systemusers({body['UserId']})")).json()
    assert user["applicationid"] == dv.config.client_id
    assert user["azureactivedirectoryobjectid"] and user["azureactivedirectoryobjectid"] != dv.config.client_id
    assert user["accessmode"] == 4 and user["islicensed"] is False and user["isintegrationuser"] is False


async def test_authentication(dv: Env) -> None:
    r = await dv.service.get(f"{API}/accounts", headers={"Authorization": ""})
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    other, _ = dv.tokens.issue(dv.config.client_id, "https://api.businesscentral.dynamics.com/.default")
    r = await dv.service.get(f"{API}/accounts", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 401
    local, _ = dv.tokens.issue(dv.config.client_id, f"http://localhost:{dv.config.dataverse_port}/.default")
    r = await dv.service.get(f"{API}/accounts", headers={"Authorization": f"Bearer {local}"})
    assert r.status_code == 200
    stranger, _ = dv.tokens.issue("11111111-2222-4333-8444-555555555555",
                                  f"http://127.0.0.1:{dv.config.dataverse_port}/.default")
    r = await dv.service.get(f"{API}/accounts", headers={"Authorization": f"Bearer {stranger}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "0x80072560"


async def test_create_returns_204_with_entity_id_or_201_with_representation(dv: Env) -> None:
    r = await dv.service.post(f"{API}/accounts", json={"name": "Fabrikam"})
    assert r.status_code == 204 and r.content == b""
    account_id = entity_id(r)
    assert r.headers["OData-EntityId"] == f"http://127.0.0.1:8082{API}/accounts({account_id})"
    r = await dv.service.post(f"{API}/accounts?$select=name,creditlimit", json={"name": "Contoso", "creditlimit": 10},
                              headers={"Prefer": "return=representation"})
    assert r.status_code == 201
    assert r.headers["Preference-Applied"] == "return=representation"
    body = r.json()
    assert set(body) == {"@odata.context", "@odata.etag", "name", "creditlimit", "accountid"}
    assert body["@odata.etag"].startswith('W/"')
    full = (await dv.service.get(f"{API}/accounts({account_id})")).json()
    created = datetime.strptime(full["createdon"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(created - datetime.now(UTC)) < timedelta(seconds=5)
    assert full["_ownerid_value"] == (await dv.service.get(f"{API}/WhoAmI")).json()["UserId"]
    assert full["_transactioncurrencyid_value"] == identity.BASE_CURRENCY_ID
    assert full["statecode"] == 0 and full["statuscode"] == 1


async def test_etag_increases_on_every_write(dv: Env) -> None:
    account_id = entity_id(await dv.service.post(f"{API}/accounts", json={"name": "A"}))
    versions = []
    for name in ("B", "C", "D"):
        assert (await dv.service.patch(f"{API}/accounts({account_id})", json={"name": name})).status_code == 204
        row = (await dv.service.get(f"{API}/accounts({account_id})")).json()
        assert row["@odata.etag"] == f'W/"{row["versionnumber"]}"'
        versions.append(row["versionnumber"])
    assert versions == sorted(versions) and len(set(versions)) == 3


async def test_patch_upsert_if_match_if_none_match_and_delete(dv: Env) -> None:
    new_id = "0c0ffee0-0000-4000-8000-000000000001"
    r = await dv.service.patch(f"{API}/accounts({new_id})", json={"name": "Upserted"})
    assert r.status_code == 204 and entity_id(r) == new_id
    missing = "0c0ffee0-0000-4000-8000-000000000002"
    r = await dv.service.patch(f"{API}/accounts({missing})", json={"name": "X"}, headers={"If-Match": "*"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"
    etag = (await dv.service.get(f"{API}/accounts({new_id})")).json()["@odata.etag"]
    r = await dv.service.patch(f"{API}/accounts({new_id})", json={"name": "Y"}, headers={"If-Match": etag})
    assert r.status_code == 204
    r = await dv.service.patch(f"{API}/accounts({new_id})", json={"name": "Z"}, headers={"If-Match": etag})
    assert r.status_code == 412 and r.json()["error"]["code"] == "0x80060882"
    r = await dv.service.patch(f"{API}/accounts({new_id})", json={"name": "Z"}, headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert (await dv.service.get(f"{API}/accounts({new_id})")).json()["name"] == "Y"
    r = await dv.service.patch(f"{API}/accounts({new_id})?$select=name", json={"name": "W"},
                               headers={"Prefer": "return=representation", "If-Match": "*"})
    assert r.status_code == 200 and r.json()["name"] == "W"
    r = await dv.service.delete(f"{API}/accounts({new_id})", headers={"If-Match": etag})
    assert r.status_code == 412
    assert (await dv.service.delete(f"{API}/accounts({new_id})")).status_code == 204
    r = await dv.service.get(f"{API}/accounts({new_id})")
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"
    assert (await dv.service.delete(f"{API}/accounts({new_id})")).status_code == 404


async def test_get_if_none_match_returns_304(dv: Env) -> None:
    account_id = entity_id(await dv.service.post(f"{API}/accounts", json={"name": "A"}))
    etag = (await dv.service.get(f"{API}/accounts({account_id})")).json()["@odata.etag"]
    assert (await dv.service.get(f"{API}/accounts({account_id})", headers={"If-None-Match": etag})).status_code == 304


async def test_lookups_bind_and_read_back(dv: Env) -> None:
    account_id = entity_id(await dv.service.post(f"{API}/accounts", json={
        "name": "Parent", "ownerid@odata.bind": f"/systemusers({identity.SALESPERSON_ID})"}))
    contact_id = entity_id(await dv.service.post(f"{API}/contacts", json={
        "firstname": "Ana", "lastname": "Trujillo",
        "parentcustomerid_account@odata.bind": f"{dv.service.base_url}{API}/accounts({account_id})"}))
    contact = (await dv.service.get(f"{API}/contacts({contact_id})?$select=fullname,_parentcustomerid_value",
                                    headers={"Prefer": 'odata.include-annotations="*"'})).json()
    assert contact["_parentcustomerid_value"] == account_id
    assert contact["fullname"] == "Ana Trujillo"
    assert contact["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert contact["_parentcustomerid_value@OData.Community.Display.V1.FormattedValue"] == "Parent"
    account = (await dv.service.get(f"{API}/accounts({account_id})?$select=_ownerid_value")).json()
    assert account["_ownerid_value"] == identity.SALESPERSON_ID
    r = await dv.service.post(f"{API}/contacts", json={
        "lastname": "X", "parentcustomerid_account@odata.bind": "/accounts(00000000-0000-4000-8000-000000000009)"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"
    r = await dv.service.patch(f"{API}/contacts({contact_id})", json={"parentcustomerid_account@odata.bind": None})
    assert r.status_code == 204
    contact = (await dv.service.get(f"{API}/contacts({contact_id})")).json()
    assert contact["_parentcustomerid_value"] is None


@pytest.mark.parametrize("body", [
    {"name": "A", "nosuchcolumn": 1},
    {"name": "A", "ownerid": identity.SALESPERSON_ID},
    {"name": "A", "_ownerid_value": identity.SALESPERSON_ID},
    {"name": 5},
    {"name": "A", "nosuchnav@odata.bind": "/systemusers(00000000-0000-4000-8000-000000000009)"},
    {"name": "A", "ownerid@odata.bind": f"/accounts({identity.SALESPERSON_ID})"},
])
async def test_bad_payloads_are_400_0x80048d19(dv: Env, body: dict[str, object]) -> None:
    r = await dv.service.post(f"{API}/accounts", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "0x80048d19"


async def test_unknown_entity_set_and_query_errors(dv: Env) -> None:
    assert (await dv.service.get(f"{API}/widgets")).status_code == 404
    for query in ("$select=nosuch", "$filter=nosuch eq 1", "$filter=name eq", "$orderby=nosuch", "$skip=5",
                  "$filter=ownerid eq null"):
        r = await dv.service.get(f"{API}/accounts?{query}")
        assert r.status_code == 400, query
        assert r.json()["error"]["code"] == "0x80060888", query


async def test_select_filter_orderby_top(dv: Env) -> None:
    ids = {}
    for i, (name, limit, number) in enumerate([("Alpha", 100.0, None), ("beta", 250.5, "C-2"),
                                              ("Gamma", 1000.0, "C-3"), ("O'Hara", 50.0, "C-4")]):
        ids[name] = entity_id(await dv.service.post(f"{API}/accounts", json={
            "name": name, "creditlimit": limit, "accountnumber": number, "customertypecode": 3 if i % 2 else 8}))

    async def names(query: str) -> list[str]:
        r = await dv.service.get(f"{API}/accounts?{query}")
        assert r.status_code == 200, r.text
        return [row["name"] for row in r.json()["value"]]

    assert await names("$filter=name eq 'BETA'&$select=name") == ["beta"]  # case-insensitive, like SQL
    assert await names("$filter=name eq 'O''Hara'") == ["O'Hara"]
    assert await names("$filter=creditlimit gt 100 and creditlimit le 1000&$orderby=creditlimit desc") == [
        "Gamma", "beta"]
    assert await names("$filter=(creditlimit lt 60 or creditlimit ge 1000) and customertypecode eq 3"
                       "&$orderby=name asc") == ["O'Hara"]
    assert await names("$filter=accountnumber eq null") == ["Alpha"]
    assert sorted(await names("$filter=accountnumber ne null")) == ["Gamma", "O'Hara", "beta"]
    assert await names(f"$filter=accountid eq {ids['Gamma']}") == ["Gamma"]
    assert await names(f"$filter=_ownerid_value eq {(await dv.service.get(f'{API}/WhoAmI')).json()['UserId']}"
                       "&$orderby=name&$top=2") == ["Alpha", "beta"]
    assert await names("$filter=contains(name,'amm') or startswith(name,'alp')&$orderby=name desc") == [
        "Gamma", "Alpha"]
    assert await names("$filter=statecode eq 0 and not (customertypecode eq 8)&$orderby=name") == ["beta", "O'Hara"]
    since = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(await names(f"$filter=modifiedon ge {since}&$orderby=modifiedon asc")) == 4
    future = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await names(f"$filter=modifiedon gt {future}") == []
    r = await dv.service.get(f"{API}/accounts?$select=name,_ownerid_value&$top=1")
    assert set(r.json()["value"][0]) == {"@odata.etag", "name", "_ownerid_value", "accountid"}
    assert r.json()["@odata.context"].endswith("$metadata#accounts(name,_ownerid_value)")
    r = await dv.service.get(f"{API}/systemusers?$filter=isdisabled eq false and islicensed eq true")
    assert [u["systemuserid"] for u in r.json()["value"]] == [identity.SALESPERSON_ID]


async def test_paging_with_maxpagesize_and_next_link(dv: Env) -> None:
    await dv.control.post("/seed", json={"accounts": 12})
    seen: list[str] = []
    url = f"{API}/accounts?$select=name&$orderby=name"
    pages = 0
    while url:
        r = await dv.service.get(url, headers={"Prefer": "odata.maxpagesize=5"})
        assert r.status_code == 200
        assert r.headers["Preference-Applied"] == "odata.maxpagesize=5"
        body = r.json()
        seen += [row["accountid"] for row in body["value"]]
        url = body.get("@odata.nextLink", "")
        if url:
            assert "$skiptoken=" in url and "$skip=" not in url
        pages += 1
    assert pages == 3 and len(seen) == len(set(seen)) == 12


async def test_5000_row_page_is_fast(dv: Env) -> None:
    await dv.control.post("/seed", json={"accounts": 6000})
    started = time.perf_counter()
    r = await dv.service.get(f"{API}/accounts", headers={"Prefer": "odata.maxpagesize=5000"})
    elapsed = time.perf_counter() - started
    assert len(r.json()["value"]) == 5000 and "@odata.nextLink" in r.json()
    assert elapsed < 1.0, elapsed
    r = await dv.service.get(r.json()["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5000"})
    assert len(r.json()["value"]) == 1000 and "@odata.nextLink" not in r.json()


async def test_service_protection_429(dv: Env) -> None:
    await dv.control.post("/limits", json={"requests": 3, "window_seconds": 300})
    for _ in range(3):
        assert (await dv.service.get(f"{API}/WhoAmI")).status_code == 200
    r = await dv.service.get(f"{API}/WhoAmI")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "0x80072322"
    assert 1 <= int(r.headers["Retry-After"]) <= 300
    # The budget is per user: the salesperson is not throttled.
    assert (await dv.human.get(f"{API}/WhoAmI")).status_code == 200


async def test_products_start_in_draft_and_are_published_by_patch(dv: Env) -> None:
    r = await dv.service.post(f"{API}/products", json={"name": "Bike", "productnumber": "1000"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040203"
    product_id = entity_id(await dv.service.post(f"{API}/products", json={
        "name": "Bike", "productnumber": "1000", "price": 899.0, "statecode": 0,
        "defaultuomscheduleid@odata.bind": f"/uomschedules({identity.DEFAULT_UNIT_GROUP_ID})",
        "defaultuomid@odata.bind": f"/uoms({identity.DEFAULT_UNIT_ID})"}))
    product = (await dv.service.get(f"{API}/products({product_id})")).json()
    assert (product["statecode"], product["statuscode"]) == (2, 0)
    assert (await dv.service.patch(f"{API}/products({product_id})", json={"statecode": 0, "statuscode": 1})
            ).status_code == 204
    product = (await dv.service.get(f"{API}/products({product_id})")).json()
    assert (product["statecode"], product["statuscode"]) == (0, 1)
    r = await dv.service.patch(f"{API}/products({product_id})", json={"statecode": 0, "statuscode": 2})
    assert r.status_code == 400


async def test_unit_group_creates_its_base_unit(dv: Env) -> None:
    group = entity_id(await dv.service.post(f"{API}/uomschedules", json={"name": "BOX", "baseuomname": "BOX"}))
    units = (await dv.service.get(f"{API}/uoms?$filter=_uomscheduleid_value eq {group}")).json()["value"]
    assert [(u["name"], u["isschedulebaseuom"], u["quantity"]) for u in units] == [("BOX", True, 1.0)]


async def _order(dv: Env) -> tuple[str, str]:
    account = entity_id(await dv.service.post(f"{API}/accounts", json={"name": "Buyer"}))
    order = entity_id(await dv.human.post(f"{API}/salesorders", json={
        "name": "Spring restock", "customerid_account@odata.bind": f"/accounts({account})"}))
    line = entity_id(await dv.human.post(f"{API}/salesorderdetails", json={
        "salesorderid@odata.bind": f"/salesorders({order})", "isproductoverridden": True,
        "productdescription": "Write-in", "quantity": 2, "priceperunit": 10.5, "manualdiscountamount": 1}))
    return order, line


async def test_sales_order_states_and_totals(dv: Env) -> None:
    order_id, line_id = await _order(dv)
    order = (await dv.service.get(f"{API}/salesorders({order_id})")).json()
    assert order["totalamount"] == 20.0 and order["ordernumber"].startswith("ORD-")
    assert (order["statecode"], order["statuscode"]) == (0, 1)
    assert (await dv.human.patch(f"{API}/salesorders({order_id})", json={"name": "Renamed"})).status_code == 204
    assert (await dv.control.post(f"/salesorders/{order_id}/submit")).status_code == 204
    order = (await dv.service.get(f"{API}/salesorders({order_id})")).json()
    assert (order["statecode"], order["statuscode"]) == (1, 3)
    r = await dv.service.patch(f"{API}/salesorders({order_id})", json={"name": "Too late"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040203"
    r = await dv.service.patch(f"{API}/salesorderdetails({line_id})", json={"quantity": 3})
    assert r.status_code == 400
    r = await dv.service.patch(f"{API}/salesorders({order_id})", json={"statecode": 3, "statuscode": 100001})
    assert r.status_code == 400 and "FulfillSalesOrderRequest" in r.json()["error"]["message"]
    r = await dv.service.post(f"{API}/FulfillSalesOrder", json={
        "OrderClose": {"subject": "Shipped", "salesorderid@odata.bind": f"/salesorders({order_id})"},
        "Status": 100001})
    assert r.status_code == 204
    order = (await dv.service.get(f"{API}/salesorders({order_id})")).json()
    assert (order["statecode"], order["statuscode"]) == (3, 100001)


async def test_paid_invoices_are_read_only(dv: Env) -> None:
    invoice = entity_id(await dv.service.post(f"{API}/invoices", json={"name": "INV", "invoicenumber": "103001"}))
    assert (await dv.service.patch(f"{API}/invoices({invoice})", json={"statecode": 0, "statuscode": 4})
            ).status_code == 204
    assert (await dv.service.patch(f"{API}/invoices({invoice})", json={"statecode": 2, "statuscode": 100001})
            ).status_code == 204
    r = await dv.service.patch(f"{API}/invoices({invoice})", json={"name": "changed"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040203"
    r = await dv.service.post(f"{API}/invoicedetails", json={
        "invoiceid@odata.bind": f"/invoices({invoice})", "quantity": 1, "priceperunit": 1,
        "isproductoverridden": True, "productdescription": "late line"})
    assert r.status_code == 400


def _batch_body(boundary: str, parts: list[str]) -> str:
    return "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"


def _http(method: str, url: str, body: dict[str, object] | None = None, content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    request = f"{method} {url} HTTP/1.1\r\n"
    if body is not None:
        request += "Content-Type: application/json\r\n\r\n" + json.dumps(body)
    else:
        request += "Accept: application/json\r\n"
    return head + "\r\n" + request


async def test_batch_with_atomic_change_sets(dv: Env) -> None:
    await register_webhook(dv.service, "account", "Create")
    ok = "changeset_ok"
    bad = "changeset_bad"
    body = _batch_body("batch_1", [
        f"Content-Type: multipart/mixed; boundary={ok}\r\n\r\n" + _batch_body(ok, [
            _http("POST", f"http://127.0.0.1:8082{API}/accounts", {"name": "In batch"}, "1"),
            _http("POST", "contacts", {"lastname": "Child", "parentcustomerid_account@odata.bind": "$1"}, "2"),
        ]),
        f"Content-Type: multipart/mixed; boundary={bad}\r\n\r\n" + _batch_body(bad, [
            _http("POST", f"{API}/accounts", {"name": "Rolled back"}, "1"),
            _http("POST", f"{API}/accounts", {"nosuch": 1}, "2"),
        ]),
        _http("GET", f"{API}/accounts?$select=name"),
    ])
    r = await dv.service.post(f"{API}/$batch", content=body, headers={
        "Content-Type": "multipart/mixed; boundary=batch_1", "Prefer": "odata.continue-on-error"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/mixed; boundary=batchresponse_")
    text = r.text
    assert text.count("HTTP/1.1 204 No Content") == 2 and "HTTP/1.1 400" in text and "0x80048d19" in text
    names = [a["name"] for a in (await dv.service.get(f"{API}/accounts")).json()["value"]]
    assert names == ["In batch"]
    contact = (await dv.service.get(f"{API}/contacts")).json()["value"][0]
    account_id = (await dv.service.get(f"{API}/accounts")).json()["value"][0]["accountid"]
    assert contact["_parentcustomerid_value"] == account_id
    assert '"name": "In batch"' in text or '"name":"In batch"' in text
    await dv.drain()  # only the committed change set's create reached the webhook
    assert [b["PrimaryEntityId"] for b in dv.receiver.bodies] == [account_id]
