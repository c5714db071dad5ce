"""Business Central client: the JSON `$batch` (respx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from service.connectors.budget import RequestBudget
from service.connectors.business_central import BatchFailed, BatchRequest, BusinessCentralClient
from service.connectors.http import ApiError
from tests.unit.test_connector_http import COMPANY, ROOT, FakeTokens

API = f"{ROOT}/api/v2.0"
C = f"{API}/companies({COMPANY})"
ETAG = 'W/"JzQ0O0VnQUFBQUo3QlRZQU5RQUFBQUFBOzE7Jw=="'
LINES = f"{C}/salesOrders(9)/salesOrderLines"


@pytest.fixture
async def bc() -> AsyncIterator[BusinessCentralClient]:
    client = BusinessCentralClient(ROOT + "/", COMPANY, "https://api.businesscentral.dynamics.com/.default",
                                   FakeTokens(), RequestBudget(1000, 60))
    yield client
    await client.aclose()


def operations() -> list[BatchRequest]:
    return [BatchRequest("1", "PATCH", f"{C}/salesOrders(9)", {"shipToCity": "Lyon"}, if_match=ETAG),
            BatchRequest("2", "POST", LINES, {"lineType": "Item", "quantity": 1}),
            BatchRequest("3", "DELETE", f"{LINES}(5)", if_match="*")]


@respx.mock
async def test_the_batch_is_sent_as_json_with_snapshot_isolation_and_answers_in_order(
        bc: BusinessCentralClient) -> None:
    route = respx.post(f"{API}/$batch").mock(return_value=httpx.Response(200, json={"responses": [
        {"id": "1", "status": 200, "headers": {}, "body": {"id": "9", "shipToCity": "Lyon"}},
        {"id": "2", "status": 201, "headers": {"location": "x"}, "body": {"id": "7", "lineType": "Item",
                                                                         "blocked": "_x0020_"}},
        {"id": "3", "status": 204, "headers": {}}]}))
    answers = await bc.batch(operations())
    request = route.calls.last.request
    assert request.headers["Isolation"] == "snapshot"
    assert json.loads(request.content) == {"requests": [
        {"id": "1", "method": "PATCH", "url": f"{C}/salesOrders(9)",
         "headers": {"Content-Type": "application/json", "If-Match": ETAG}, "body": {"shipToCity": "Lyon"}},
        {"id": "2", "method": "POST", "url": LINES, "headers": {"Content-Type": "application/json"},
         "body": {"lineType": "Item", "quantity": 1}},
        {"id": "3", "method": "DELETE", "url": f"{LINES}(5)",
         "headers": {"Content-Type": "application/json", "If-Match": "*"}}]}
    assert [(a.id, a.status, a.ok) for a in answers] == [("1", 200, True), ("2", 201, True), ("3", 204, True)]
    assert answers[1].body == {"id": "7", "lineType": "Item", "blocked": ""}  # option values decoded, as reads
    assert answers[1].headers == {"location": "x"} and answers[2].body is None


@respx.mock
async def test_a_failed_operation_raises_its_own_error_not_a_rolled_back_ones(bc: BusinessCentralClient) -> None:
    rolled_back = {"error": {"code": "BadRequest_FailedDependency", "message": "rolled back"}}
    respx.post(f"{API}/$batch").mock(return_value=httpx.Response(200, json={"responses": [
        {"id": "1", "status": 424, "headers": {}, "body": rolled_back},
        {"id": "2", "status": 400, "headers": {}, "body": {"error": {
            "code": "Internal_RecordNotFound", "message": "The Item does not exist."}}},
        {"id": "3", "status": 424, "headers": {}, "body": rolled_back}]}))
    with pytest.raises(BatchFailed) as raised:
        await bc.batch(operations())
    failure = raised.value
    assert isinstance(failure, ApiError)
    assert (failure.status, failure.code, failure.message, failure.operation) == (
        400, "Internal_RecordNotFound", "The Item does not exist.", "2")
    assert str(failure) == "BC 400 Internal_RecordNotFound: The Item does not exist."
    assert [a.rolled_back for a in failure.responses] == [True, False, True]


@respx.mock
async def test_unchecked_failures_are_returned_and_isolation_can_be_left_out(bc: BusinessCentralClient) -> None:
    route = respx.post(f"{API}/$batch").mock(return_value=httpx.Response(200, json={"responses": [
        {"id": "1", "status": 200, "headers": {}, "body": {"id": "9"}},
        {"id": "2", "status": 400, "headers": {}, "body": {"error": {"code": "BadRequest", "message": "no"}}}]}))
    answers = await bc.batch(operations(), isolation=None, check=False)
    assert "Isolation" not in route.calls.last.request.headers
    assert [a.ok for a in answers] == [True, False]  # BC stops at the first failure without snapshot: no "3"
    error = answers[1].error()
    assert (error.status, error.code, error.message) == (400, "BadRequest", "no")


@respx.mock
async def test_an_empty_batch_sends_nothing(bc: BusinessCentralClient) -> None:
    route = respx.post(f"{API}/$batch").mock(return_value=httpx.Response(200, json={"responses": []}))
    assert await bc.batch([]) == []
    assert not route.called
