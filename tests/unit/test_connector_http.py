"""The shared retry policy, exercised through the Business Central client with respx."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from service.connectors.budget import RequestBudget
from service.connectors.business_central import BusinessCentralClient
from service.connectors.http import MAX_RETRY_AFTER, ApiError, ApiTransport, is_transient, retry_after_seconds

ROOT = "https://bc.test/v2.0/tenant/production"
COMPANY = "c0ffee00-1234-4abc-9def-0123456789ab"
CUSTOMERS = f"/v2.0/tenant/production/api/v2.0/companies({COMPANY})/customers"
ERROR = {"error": {"code": "Internal_ServerError", "message": "boom  CorrelationId:  x."}}


class FakeTokens:
    def __init__(self) -> None:
        self.issued = 0
        self.forced = 0

    async def token(self, scope: str, *, force_refresh: bool = False) -> str:
        if force_refresh or not self.issued:
            self.issued += 1
            self.forced += force_refresh
        return f"secret-token-{self.issued}"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ApiTransport, "backoff_base", 0.001)
    monkeypatch.setattr(ApiTransport, "backoff_cap", 0.01)


@pytest.fixture
async def bc() -> AsyncIterator[BusinessCentralClient]:
    client = BusinessCentralClient(ROOT, COMPANY, "scope", FakeTokens(), RequestBudget(1000, 60), max_attempts=4)
    yield client
    await client.aclose()


def route(method: str = "GET") -> respx.Route:
    return respx.route(method=method, host="bc.test", path=CUSTOMERS)


@respx.mock
async def test_401_refreshes_the_token_once_and_retries(bc: BusinessCentralClient) -> None:
    r = route().mock(side_effect=[httpx.Response(401), httpx.Response(200, json={"value": []})])
    assert [row async for row in bc.list("customers")] == []
    assert [c.request.headers["Authorization"] for c in r.calls] == ["Bearer secret-token-1", "Bearer secret-token-2"]


@respx.mock
async def test_a_second_401_is_raised(bc: BusinessCentralClient) -> None:
    r = route().mock(return_value=httpx.Response(401, json={"error": {"code": "Authentication_InvalidCredentials",
                                                                      "message": "bad"}}))
    with pytest.raises(ApiError) as raised:
        [row async for row in bc.list("customers")]
    assert raised.value.status == 401 and r.call_count == 2
    assert "secret-token" not in str(raised.value)


@respx.mock
async def test_429_retry_after_seconds_pauses_the_budget(bc: BusinessCentralClient) -> None:
    r = route().mock(side_effect=[httpx.Response(429, headers={"Retry-After": "1"}, json=ERROR),
                                  httpx.Response(200, json={"value": [{"id": "1"}]})])
    started = time.monotonic()
    assert [row async for row in bc.list("customers")] == [{"id": "1"}]
    assert time.monotonic() - started >= 0.95 and r.call_count == 2


@respx.mock
async def test_503_retry_after_http_date(bc: BusinessCentralClient) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    r = route().mock(side_effect=[httpx.Response(503, headers={"Retry-After": when}),
                                  httpx.Response(200, json={"value": []})])
    started = time.monotonic()
    [row async for row in bc.list("customers")]
    assert time.monotonic() - started >= 0.9 and r.call_count == 2


def test_retry_after_parsing() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "7"})) == 7
    assert retry_after_seconds(httpx.Response(429)) is None
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": past})) == 0


def test_a_retry_after_of_a_day_is_capped() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "86400"})) == MAX_RETRY_AFTER
    tomorrow = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": tomorrow})) == MAX_RETRY_AFTER


@respx.mock
async def test_a_long_retry_after_ends_the_request_as_transient_instead_of_waiting_in_it(
        bc: BusinessCentralClient) -> None:
    """Waiting minutes inside one run would hold its record lease and a worker slot (and the broker delivery):
    the event waits in a delay queue instead, without spending its retry budget."""
    r = route().mock(side_effect=[httpx.Response(429, headers={"Retry-After": "120"}, json=ERROR),
                                  httpx.Response(200, json={"value": []})])
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        [row async for row in bc.list("customers")]
    assert time.monotonic() - started < 5 and r.call_count == 1
    assert raised.value.status == 429 and is_transient(raised.value)


@respx.mock
async def test_5xx_backs_off_and_retries(bc: BusinessCentralClient) -> None:
    r = route().mock(side_effect=[httpx.Response(500, json=ERROR), httpx.Response(502),
                                  httpx.Response(200, json={"value": []})])
    [row async for row in bc.list("customers")]
    assert r.call_count == 3


@respx.mock
async def test_timeouts_and_connection_errors_are_retried(bc: BusinessCentralClient) -> None:
    r = route().mock(side_effect=[httpx.ReadTimeout("slow"), httpx.ConnectError("refused"),
                                  httpx.Response(200, json={"value": []})])
    [row async for row in bc.list("customers")]
    assert r.call_count == 3


@respx.mock
async def test_max_attempts_then_the_last_status(bc: BusinessCentralClient) -> None:
    r = route().mock(return_value=httpx.Response(500, json=ERROR))
    with pytest.raises(ApiError) as raised:
        [row async for row in bc.list("customers")]
    assert r.call_count == 4 and raised.value.status == 500 and raised.value.code == "Internal_ServerError"


@respx.mock
async def test_max_attempts_of_transport_errors_is_status_0(bc: BusinessCentralClient) -> None:
    route().mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ApiError) as raised:
        [row async for row in bc.list("customers")]
    assert raised.value.status == 0


@pytest.mark.parametrize(("status", "transient"), [
    (0, True), (408, True), (429, True), (500, True), (502, True), (503, True), (504, True),
    (400, False), (401, False), (403, False), (404, False), (409, False), (412, False), (422, False)])
def test_which_failures_are_transient(status: int, transient: bool) -> None:
    """Transient failures never put a record on the skip list (service/store/synclog.py)."""
    assert is_transient(ApiError(status, "code", "message")) is transient


def test_only_api_errors_are_transient() -> None:
    assert not is_transient(ValueError("503")) and not is_transient(None)


@respx.mock
async def test_4xx_is_not_retried(bc: BusinessCentralClient) -> None:
    r = route("POST").mock(return_value=httpx.Response(400, json={"error": {
        "code": "BadRequest", "message": "The property 'nope' does not exist"}}))
    with pytest.raises(ApiError) as raised:
        await bc.create("customers", {"nope": 1})
    assert r.call_count == 1 and raised.value.code == "BadRequest" and "nope" in raised.value.message


@respx.mock
async def test_each_attempt_counts_against_the_budget(bc: BusinessCentralClient) -> None:
    route().mock(side_effect=[httpx.Response(500), httpx.Response(200, json={"value": []})])
    [row async for row in bc.list("customers")]
    assert bc.budget.used == 2


@respx.mock
async def test_retry_log_has_no_query_or_token(bc: BusinessCentralClient, capsys: pytest.CaptureFixture[str]) -> None:
    route().mock(side_effect=[httpx.Response(503), httpx.Response(200, json={"value": []})])
    [row async for row in bc.list("customers", filter="email eq 'secret@x.test'")]
    out = capsys.readouterr().out
    assert "api retry" in out and CUSTOMERS in out
    assert "secret" not in out


@respx.mock
async def test_a_next_link_to_the_same_page_stops(bc: BusinessCentralClient) -> None:
    url = f"https://bc.test{CUSTOMERS}"
    route().mock(return_value=httpx.Response(200, json={"value": [{"id": "1"}], "@odata.nextLink": url}))
    with pytest.raises(ApiError) as raised:
        [row async for row in bc.list("customers")]
    assert raised.value.code == "PagingLoop"


@respx.mock
async def test_a_post_that_may_have_arrived_is_not_sent_twice(bc: BusinessCentralClient) -> None:
    r = route("POST").mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(201, json={"id": "1"})])
    with pytest.raises(ApiError) as raised:
        await bc.create("customers", {"displayName": "A"})
    assert raised.value.status == 0 and r.call_count == 1
    r.side_effect = [httpx.ConnectError("refused"), httpx.Response(201, json={"id": "1"})]
    assert (await bc.create("customers", {"displayName": "A"}))["id"] == "1"  # never sent: safe to retry
