import httpx
import pytest
import respx

from service.connectors.dataverse import DataverseClient, DataverseError

API = "https://contoso.crm.dynamics.com/api/data/v9.2"


class FakeTokens:
    """Hands out numbered tokens; a forced refresh moves to the next one."""

    def __init__(self) -> None:
        self.issued = 0
        self.scopes: list[str] = []

    async def token(self, scope: str, *, force_refresh: bool = False) -> str:
        self.scopes.append(scope)
        if force_refresh or not self.issued:
            self.issued += 1
        return f"token-{self.issued}"


@respx.mock
async def test_who_am_i_sends_the_bearer_token_and_reads_the_user_id() -> None:
    route = respx.get(f"{API}/WhoAmI").mock(return_value=httpx.Response(200, json={
        "UserId": "0B7E9C2D-4F61-4A8E-9D3C-5E6F7A8B9C0D", "BusinessUnitId": "b", "OrganizationId": "o"}))
    tokens = FakeTokens()
    client = DataverseClient(API, "https://contoso.crm.dynamics.com/.default", tokens)
    assert await client.who_am_i() == "0b7e9c2d-4f61-4a8e-9d3c-5e6f7a8b9c0d"
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer token-1"
    assert request.headers["OData-Version"] == "4.0"
    assert tokens.scopes == ["https://contoso.crm.dynamics.com/.default"]
    await client.aclose()


@respx.mock
async def test_a_401_is_retried_once_with_a_fresh_token() -> None:
    route = respx.get(f"{API}/WhoAmI").mock(side_effect=[
        httpx.Response(401, json={"error": {"code": "0x80072560", "message": "expired"}}),
        httpx.Response(200, json={"UserId": "u"}),
    ])
    client = DataverseClient(API, "s", FakeTokens())
    assert await client.who_am_i() == "u"
    assert [c.request.headers["Authorization"] for c in route.calls] == ["Bearer token-1", "Bearer token-2"]
    await client.aclose()


@respx.mock
async def test_errors_carry_dataverse_code_and_message() -> None:
    respx.get(f"{API}/WhoAmI").mock(return_value=httpx.Response(
        403, json={"error": {"code": "0x80040220", "message": "Principal user is missing prvReadSystemUser"}}))
    client = DataverseClient(API, "s", FakeTokens())
    with pytest.raises(DataverseError) as raised:
        await client.who_am_i()
    assert raised.value.status == 403 and raised.value.code == "0x80040220"
    assert "prvReadSystemUser" in str(raised.value)
    await client.aclose()
