"""Conformance of the BC stand-in's API v2.0: auth, CRUD, ETags/If-Match, errors, query options, paging."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

import httpx

from sandbox.bc.runtime import BCSandbox
from sandbox.tokens import TokenIssuer
from tests.sandbox.conftest import COMPANY, CUSTOM, ROOT, basics, make

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$")
def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))  # variable fractional digits: not a string compare


CORRELATION = re.compile(r"  CorrelationId:  [0-9a-f-]{36}\.$")


async def test_token_required(client: httpx.AsyncClient, bc_tokens: TokenIssuer) -> None:
    response = await client.get(f"{ROOT}/companies", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Authentication_InvalidCredentials"
    assert response.headers["www-authenticate"].startswith("Bearer ")
    other, _ = bc_tokens.issue("x", "https://org.crm.dynamics.com/.default")  # another audience
    response = await client.get(f"{ROOT}/companies", headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 401


async def test_companies(client: httpx.AsyncClient, bc: BCSandbox) -> None:
    response = await client.get(f"{ROOT}/companies")
    assert response.status_code == 200
    assert [c["id"] for c in response.json()["value"]] == [bc.company_id]
    assert (await client.get(COMPANY)).json()["id"] == bc.company_id
    missing = await client.get(f"{ROOT}/companies(11111111-1111-1111-1111-111111111111)/customers")
    assert missing.status_code == 404


async def test_create_assigns_id_number_etag_time(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{COMPANY}/customers", json={"displayName": "Adatum"})
    assert response.status_code == 201
    body = response.json()
    assert GUID.match(body["id"]) and body["number"] == "C00010"
    assert body["@odata.etag"].startswith('W/"JzI0O') and ISO.match(body["lastModifiedDateTime"])
    assert response.headers["etag"] == body["@odata.etag"]
    second = await make(client, "customers", {"displayName": "Trey"})
    assert second["number"] == "C00020"


async def test_patch_and_delete_need_if_match(client: httpx.AsyncClient) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum"})
    url = f"{COMPANY}/customers({customer['id']})"
    missing = await client.patch(url, json={"city": "Oslo"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "BadRequest_InvalidToken"
    assert CORRELATION.search(missing.json()["error"]["message"])
    ok = await client.patch(url, json={"city": "Oslo"}, headers={"If-Match": customer["@odata.etag"]})
    assert ok.status_code == 200 and ok.json()["city"] == "Oslo"
    assert ok.json()["@odata.etag"] != customer["@odata.etag"]
    assert when(ok.json()["lastModifiedDateTime"]) >= when(customer["lastModifiedDateTime"])
    stale = await client.patch(url, json={"city": "Rome"}, headers={"If-Match": customer["@odata.etag"]})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "Request_EntityChanged"
    assert stale.json()["error"]["message"].startswith("Another user has already changed the record.")
    star = await client.patch(url, json={"city": "Rome"}, headers={"If-Match": "*"})
    assert star.status_code == 200
    assert (await client.delete(url)).status_code == 400
    assert (await client.delete(url, headers={"If-Match": ok.json()["@odata.etag"]})).status_code == 409
    assert (await client.delete(url, headers={"If-Match": star.json()["@odata.etag"]})).status_code == 204
    gone = await client.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "BadRequest_NotFound"


async def test_patch_without_change_keeps_etag(client: httpx.AsyncClient) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum", "city": "Oslo"})
    same = await client.patch(f"{COMPANY}/customers({customer['id']})", json={"city": "Oslo"},
                              headers={"If-Match": "*"})
    assert same.json()["@odata.etag"] == customer["@odata.etag"]


async def test_validation_errors(client: httpx.AsyncClient) -> None:
    unknown = await client.post(f"{COMPANY}/customers", json={"nope": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "BadRequest"
    assert unknown.json()["error"]["message"].startswith(
        "The property 'nope' does not exist on type 'Microsoft.NAV.customer'. Make sure to only use property "
        "names that are defined by the type.  CorrelationId:  ")
    wrong_type = await client.post(f"{COMPANY}/customers", json={"creditLimit": "lots"})
    assert wrong_type.status_code == 400
    assert (await client.post(f"{COMPANY}/items", json={"type": "Gadget"})).status_code == 400
    assert (await client.post(f"{COMPANY}/customers", json={"blocked": "Maybe"})).status_code == 400
    no_salesperson = await client.post(f"{COMPANY}/customers", json={"salespersonCode": "ZZ"})
    assert no_salesperson.status_code == 400
    assert no_salesperson.json()["error"]["code"] == "Internal_RecordNotFound"
    await make(client, "salespeoplePurchasers", {"code": "JR"})
    duplicate = await client.post(f"{COMPANY}/salespeoplePurchasers", json={"code": "jr"})
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["code"] == "Internal_EntityWithSameKeyExists"
    assert (await client.get(f"{COMPANY}/nothings")).status_code == 404
    assert (await client.get(f"{COMPANY}/customers(123)")).status_code == 400
    bad_json = await client.post(f"{COMPANY}/customers", content=b"{", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400


async def test_related_codes_resolve(client: httpx.AsyncClient) -> None:
    data = await basics(client)
    assert data["customer"]["currencyId"] == data["currency"]["id"]
    assert data["item"]["baseUnitOfMeasureId"] == data["unit"]["id"]
    assert data["customer"]["salespersonCode"] == "JR"


async def test_filter_select_top(client: httpx.AsyncClient) -> None:
    first = await make(client, "customers", {"displayName": "Adatum", "city": "Oslo"})
    await asyncio.sleep(0.01)  # lastModifiedDateTime has milliseconds: the next writes must not tie with this one
    await make(client, "customers", {"displayName": "O'Brien", "city": "Rome", "creditLimit": 500})
    third = await make(client, "customers", {"displayName": "Trey", "city": "Rome"})

    async def names(query: str) -> list[str]:
        response = await client.get(f"{COMPANY}/customers?{query}")
        assert response.status_code == 200, response.text
        return [c["displayName"] for c in response.json()["value"]]

    assert await names("$filter=city eq 'Rome'") == ["O'Brien", "Trey"]
    assert await names("$filter=displayName eq 'O''Brien'") == ["O'Brien"]
    assert await names("$filter=city eq 'rome' and creditLimit gt 100") == ["O'Brien"]
    assert await names(f"$filter=id eq {third['id']}") == ["Trey"]
    assert await names(f"$filter=number eq '{first['number']}' or city eq 'Nowhere'") == ["Adatum"]
    assert await names(f"$filter=lastModifiedDateTime gt {first['lastModifiedDateTime']}") == ["O'Brien", "Trey"]
    assert await names("$filter=lastModifiedDateTime gt 2999-01-01T00:00:00Z") == []
    assert await names("$top=2") == ["Adatum", "O'Brien"]
    selected = (await client.get(f"{COMPANY}/customers?$select=number,city&$top=1")).json()["value"][0]
    assert set(selected) == {"@odata.etag", "number", "city"}
    assert (await client.get(f"{COMPANY}/customers?$filter=nope eq 1")).status_code == 400
    assert (await client.get(f"{COMPANY}/customers?$select=nope")).status_code == 400


async def test_paging_with_maxpagesize(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/seed", json={"customers": 25, "items": 0, "contactsPerCustomer": 0})
    url: str | None = f"{COMPANY}/customers?$select=number"
    seen: list[str] = []
    pages = 0
    while url:
        response = await client.get(url, headers={"Prefer": "odata.maxpagesize=10"})
        assert response.headers["preference-applied"] == "odata.maxpagesize=10"
        body = response.json()
        seen += [c["number"] for c in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
    assert pages == 3 and len(seen) == 25 == len(set(seen))
    capped = await client.get(f"{COMPANY}/customers", headers={"Prefer": "odata.maxpagesize=50000"})
    assert capped.headers["preference-applied"] == "odata.maxpagesize=20000"
    top = await client.get(f"{COMPANY}/customers?$top=15", headers={"Prefer": "odata.maxpagesize=10"})
    rest = await client.get(top.json()["@odata.nextLink"])
    assert len(top.json()["value"]) == 10 and len(rest.json()["value"]) == 5
    assert "@odata.nextLink" not in rest.json()


async def test_big_page_is_fast(client: httpx.AsyncClient) -> None:
    import time
    await client.post("/_sandbox/seed", json={"customers": 6000, "items": 0, "contactsPerCustomer": 0})
    started = time.perf_counter()
    response = await client.get(f"{COMPANY}/customers", headers={"Prefer": "odata.maxpagesize=5000"})
    assert len(response.json()["value"]) == 5000
    assert time.perf_counter() - started < 1.0


async def test_company_contact_linked_to_customer(client: httpx.AsyncClient) -> None:
    customer = await make(client, "customers", {"displayName": "Adatum", "city": "Oslo"})
    info = (await client.get(f"{COMPANY}/customers({customer['id']})/contactsInformation")).json()["value"]
    assert len(info) == 1 and info[0]["relatedType"] == "Customer" and info[0]["contactType"] == "Company"
    company = (await client.get(f"{COMPANY}/contacts({info[0]['contactId']})")).json()
    assert company["type"] == "Company" and company["contactBusinessRelation"] == "Customer"
    person = await make(client, "contacts", {"type": "Person", "displayName": "Ann Lee",
                                             "companyNumber": company["number"]})
    assert person["companyName"] == "Adatum"
    await client.patch(f"{COMPANY}/customers({customer['id']})", json={"displayName": "Adatum Corp"},
                       headers={"If-Match": "*"})
    assert (await client.get(f"{COMPANY}/contacts({person['id']})")).json()["companyName"] == "Adatum Corp"
    info = (await client.get(f"{COMPANY}/customers({customer['id']})/contactsInformation")).json()["value"]
    assert [(i["contactType"], i["contactId"]) for i in info] == [("Company", company["id"]), ("Person", person["id"])]


async def test_custom_api(client: httpx.AsyncClient) -> None:
    group = await make(client, "customerPriceGroups", {"code": "RETAIL", "description": "Retail"}, CUSTOM)
    assert group["code"] == "RETAIL"
    resource = await make(client, "resources", {"displayName": "Consultant", "unitPrice": 120}, CUSTOM)
    assert resource["number"] == "R00010"
    assert (await client.get(f"{CUSTOM}/resources")).json()["value"][0]["id"] == resource["id"]
    assert (await client.get(f"{COMPANY}/resources")).status_code == 404  # not a v2.0 entity


async def test_orderby_with_paging(client: httpx.AsyncClient) -> None:
    for name, limit in (("B", 300), ("A", 100), ("C", 200)):
        await make(client, "customers", {"displayName": name, "creditLimit": limit})
    first = await client.get(f"{COMPANY}/customers?$orderby=creditLimit desc&$select=displayName",
                             headers={"Prefer": "odata.maxpagesize=2"})
    second = await client.get(first.json()["@odata.nextLink"])
    names = [c["displayName"] for c in first.json()["value"] + second.json()["value"]]
    assert names == ["B", "C", "A"]
    by_name = await client.get(f"{COMPANY}/customers?$orderby=displayName&$count=true")
    assert [c["displayName"] for c in by_name.json()["value"]] == ["A", "B", "C"]
    assert by_name.json()["@odata.count"] == 3
    assert (await client.get(f"{COMPANY}/customers?$orderby=nope")).status_code == 400


async def test_a_blank_currency_shows_as_the_lcy_code_and_the_lcy_code_writes_blank(
        client: httpx.AsyncClient, bc: BCSandbox) -> None:
    # APIV2 pages: CurrencyCodeTxt := TranslateNAVCurrencyCodeToCurrencyCode(LCYCurrencyCode, "Currency Code");
    # shared/samples/bc-customer.json: an LCY customer shows "USD" with a zero currencyId.
    body = (await client.post(f"{COMPANY}/customers", json={"displayName": "Local Ltd"})).json()
    assert (body["currencyCode"], body["currencyId"]) == ("USD", "00000000-0000-0000-0000-000000000000")
    stored = bc.records.get("customers", body["id"]).data
    assert stored["currencyCode"] == ""
    await client.post(f"{COMPANY}/currencies", json={"code": "EUR", "displayName": "Euro", "symbol": "€"})
    euro = await client.patch(f"{COMPANY}/customers({body['id']})", json={"currencyCode": "EUR"},
                              headers={"If-Match": "*"})
    assert euro.json()["currencyCode"] == "EUR"
    back = await client.patch(f"{COMPANY}/customers({body['id']})", json={"currencyCode": "USD"},
                              headers={"If-Match": "*"})
    assert back.status_code == 200 and back.json()["currencyCode"] == "USD"
    assert bc.records.get("customers", body["id"]).data["currencyCode"] == ""
