"""Fixtures for the BC and Entra stand-in tests: an in-process BC app (ASGI transport), a token, and
an in-process webhook receiver that the BC stand-in's HTTP client is pointed at."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from sandbox.bc.app import create_app
from sandbox.bc.runtime import BC_AUDIENCE, BCSandbox
from sandbox.config import DEMO_COMPANY_ID, DEMO_TENANT_ID, SandboxConfig
from sandbox.tokens import TokenIssuer
from tests.sandbox_thread import start_sandbox_thread

ROOT = f"/v2.0/{DEMO_TENANT_ID}/production/api/v2.0"
COMPANY = f"{ROOT}/companies({DEMO_COMPANY_ID})"
CUSTOM = f"/v2.0/{DEMO_TENANT_ID}/production/api/bcsync/integration/v1.0/companies({DEMO_COMPANY_ID})"
HOOK_URL = "http://receiver.test/hook"


@dataclass
class Receiver:
    """A webhook endpoint: answers handshakes and records notifications, with a scripted status."""

    statuses: list[int] = field(default_factory=list)  # next answers to notifications (then 202)
    handshake_ok: bool = True
    handshake_sleep: float = 0.0
    handshakes: list[str] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        token = request.query_params.get("validationToken")
        response: Response
        if token is not None:
            self.handshakes.append(token)
            if self.handshake_sleep:
                await asyncio.sleep(self.handshake_sleep)
            response = PlainTextResponse(token if self.handshake_ok else "nope",
                                         status_code=200 if self.handshake_ok else 400)
        else:
            self.notifications.append(await request.json())
            self.headers.append(dict(request.headers))
            self.event.set()
            response = Response(status_code=self.statuses.pop(0) if self.statuses else 202)
        await response(scope, receive, send)

    async def wait(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.notifications) < count:
                self.event.clear()
                await self.event.wait()


@pytest.fixture
def bc_config(request: pytest.FixtureRequest) -> SandboxConfig:
    """Readings can be chosen per test: `@pytest.mark.parametrize("bc_config", [{...}], indirect=True)`."""
    readings: dict[str, Any] = getattr(request, "param", {})
    # 1 protocol second = 0.1 ms: BC's 1-minute retry delay becomes 6 ms, 3 days ≈ 26 s.
    return SandboxConfig(time_factor=0.0001, bc_notify_delay=0.05, **readings)


@pytest.fixture
def bc_tokens() -> TokenIssuer:
    return TokenIssuer(tenant_id=DEMO_TENANT_ID, issuer_host="https://127.0.0.1:8443")


@pytest.fixture
def bc(bc_config: SandboxConfig, bc_tokens: TokenIssuer) -> BCSandbox:
    return BCSandbox(bc_config, bc_tokens)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def client(bc: BCSandbox, bc_tokens: TokenIssuer, receiver: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(bc.config, bc_tokens, bc)
    bc.webhooks.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver))
    token, _ = bc_tokens.issue(bc.config.client_id, BC_AUDIENCE + "/.default")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bc.test",
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        yield http
    await bc.webhooks.close()


async def make(client: httpx.AsyncClient, entity: str, body: dict[str, Any], root: str = COMPANY) -> dict[str, Any]:
    response = await client.post(f"{root}/{entity}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def basics(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """A currency, a unit, a salesperson, a customer and an item, made through the API."""
    out = {
        "currency": await make(client, "currencies", {"code": "EUR", "displayName": "Euro", "symbol": "€"}),
        "unit": await make(client, "unitsOfMeasure", {"code": "PCS", "displayName": "Piece"}),
        "salesperson": await make(client, "salespeoplePurchasers", {"code": "JR", "displayName": "Jo Ray"}),
    }
    out["customer"] = await make(client, "customers", {"displayName": "Adatum", "salespersonCode": "JR",
                                                       "city": "Seattle", "currencyCode": "EUR"})
    out["item"] = await make(client, "items", {"displayName": "Desk", "unitPrice": 100,
                                               "baseUnitOfMeasureCode": "PCS"})
    return out


# ---- the whole sandbox, live on real ports (module scope: started once per test module) -----------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Live:
    config: SandboxConfig

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.config.entra_port}/{self.config.tenant_id}"

    @property
    def bc_root(self) -> str:
        return f"http://127.0.0.1:{self.config.bc_port}/v2.0/{self.config.tenant_id}/{self.config.environment}/api/v2.0"

    def https(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=self.config.ca_file))

    def bc_token(self) -> str:
        """A BC token from the Entra stand-in's token endpoint (client credentials)."""
        with self.https() as http:
            response = http.post(f"{self.authority}/oauth2/v2.0/token", data={
                "client_id": self.config.client_id, "client_secret": self.config.client_secret,
                "scope": BC_AUDIENCE + "/.default", "grant_type": "client_credentials"})
        return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    ca_file = str(tmp_path_factory.mktemp("ca") / "ca.pem")
    config, stop = start_sandbox_thread(Path(ca_file).parent)
    yield Live(config)
    stop()


