"""The matcher's per-record candidates (respx): one OData `$filter` per match key, the first key with a value
that finds any decides, at most 5."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import respx

from schemas.mappings import BY_NAME
from schemas.vocabulary import Side
from service.connectors.budget import RequestBudget
from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.matching import Matcher, bulk_key, key_value
from tests.unit.test_connector_http import COMPANY, ROOT, FakeTokens

CUSTOMERS = f"{ROOT}/api/v2.0/companies({COMPANY})/customers"
DV = "https://contoso.crm.dynamics.com/api/data/v9.2"


@pytest.fixture
async def matcher() -> AsyncIterator[Matcher]:
    bc = BusinessCentralClient(ROOT, COMPANY, "https://api.businesscentral.dynamics.com/.default", FakeTokens(),
                               RequestBudget(1000, 60))
    dv = DataverseClient(DV, "https://contoso.crm.dynamics.com/.default", FakeTokens(), RequestBudget(1000, 60))
    yield Matcher(BY_NAME["CUSTOMER"], bc, dv)  # match keys: number/accountnumber, then displayName/name
    await bc.aclose()
    await dv.aclose()


def answer(rows: dict[str, list[dict[str, str]]]) -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"value": rows.get(request.url.params["$filter"], [])})
    return reply


@respx.mock
async def test_toward_bc_a_blank_key_is_skipped_and_the_next_one_decides(matcher: Matcher) -> None:
    many = [{"id": str(n), "displayName": "O'Neil"} for n in range(7)]
    route = respx.get(CUSTOMERS).mock(side_effect=answer({"displayName eq 'O''Neil'": many}))
    found = await matcher.candidates(Side.BC, {"accountid": "a", "accountnumber": "", "name": "O'Neil"})
    assert [r["id"] for r in found] == ["0", "1", "2", "3", "4"]  # at most 5
    assert [call.request.url.params["$filter"] for call in route.calls] == ["displayName eq 'O''Neil'"]


@respx.mock
async def test_a_key_that_finds_nothing_gives_way_to_the_next(matcher: Matcher) -> None:
    route = respx.get(CUSTOMERS).mock(side_effect=answer({"displayName eq 'Fabrikam'": [{"id": "9"}]}))
    found = await matcher.candidates("bc", {"accountnumber": "C-1 ", "name": "Fabrikam"})
    assert found == [{"id": "9"}]
    # Per record the value goes to the server as it is (not trimmed): the server's equality decides.
    assert [call.request.url.params["$filter"] for call in route.calls] == [
        "number eq 'C-1 '", "displayName eq 'Fabrikam'"]


@respx.mock
async def test_toward_dataverse_the_bc_values_are_looked_up_in_the_dataverse_columns(matcher: Matcher) -> None:
    route = respx.get(f"{DV}/accounts").mock(side_effect=answer({"accountnumber eq 'C00010'": [
        {"accountid": "A", "accountnumber": "C00010"}]}))
    found = await matcher.candidates(Side.DATAVERSE, {"id": "x", "number": "C00010", "displayName": "Adatum"})
    assert found == [{"accountid": "A", "accountnumber": "C00010"}]
    assert [call.request.url.params["$filter"] for call in route.calls] == ["accountnumber eq 'C00010'"]


@respx.mock
async def test_no_key_value_no_request(matcher: Matcher) -> None:
    route = respx.get(CUSTOMERS).mock(side_effect=answer({}))
    assert await matcher.candidates(Side.BC, {"accountnumber": None, "name": ""}) == []
    assert not route.called


def test_key_normalisation_per_record_and_in_bulk() -> None:
    assert [key_value(v) for v in (None, "", " ", 0, "Ab")] == [None, None, " ", "0", "Ab"]
    assert [bulk_key(v) for v in (None, "", " ", 0, " Ab ")] == [None, None, None, "0", "ab"]
