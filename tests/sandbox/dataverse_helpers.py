"""Helpers for the Dataverse stand-in tests: an app with an in-process webhook receiver, clients for the
service (bearer token) and for a human user (control endpoints), and webhook registration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox.config import SandboxConfig
from sandbox.dataverse import create_app
from sandbox.dataverse.state import DataverseState
from sandbox.tokens import TokenIssuer

API = "/api/data/v9.2"
BASE = "http://127.0.0.1:8082"
HOOK_URL = "http://127.0.0.1:8000/webhooks/dataverse"
_HERE = Path(__file__).resolve()
SAMPLES = _HERE.parents[3] / "shared" / "samples"
if not SAMPLES.exists():
    SAMPLES = _HERE.parents[1] / "samples"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


@dataclass
class Receiver:
    """Answers webhooks with the queued statuses (then 200) and keeps every request."""
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[httpx.Request] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


@dataclass
class Env:
    config: SandboxConfig
    tokens: TokenIssuer
    state: DataverseState
    service: httpx.AsyncClient      # the integration: bearer token of the app registration
    human: httpx.AsyncClient        # the seeded salesperson through /_sandbox/user
    control: httpx.AsyncClient      # /_sandbox without a token
    receiver: Receiver

    async def drain(self) -> None:
        assert await self.state.dispatcher.drain(5.0)


@asynccontextmanager
async def make_env(webhook_timeout: float = 60.0, **readings: Any) -> AsyncIterator[Env]:
    """The stand-in with the given readings of config.py (nav_style="pascal", fulfill_binding="bound", ...)."""
    config = SandboxConfig(**readings)
    tokens = TokenIssuer(config.tenant_id)
    receiver = Receiver()
    app = create_app(config, tokens, webhook_transport=httpx.MockTransport(receiver.handle),
                     webhook_timeout=webhook_timeout, webhook_retry_delay=0.01)
    token, _ = tokens.issue(config.client_id, f"http://127.0.0.1:{config.dataverse_port}/.default")
    transport = httpx.ASGITransport(app)
    async with (
        httpx.AsyncClient(transport=transport, base_url=BASE, headers={"Authorization": f"Bearer {token}"}) as svc,
        httpx.AsyncClient(transport=transport, base_url=f"{BASE}/_sandbox/user") as human,
        httpx.AsyncClient(transport=transport, base_url=f"{BASE}/_sandbox") as control,
    ):
        env = Env(config, tokens, app.state.dataverse, svc, human, control, receiver)
        yield env
        await env.state.dispatcher.close()


def entity_id(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


async def nav(client: httpx.AsyncClient, table: str, column: str, target: str | None = None) -> str:
    """The navigation name of a lookup as the org declares it (ManyToOneRelationships), as a client must
    read it: the spelling depends on the org (nav_style)."""
    response = await client.get(f"{API}/EntityDefinitions(LogicalName='{table}')/ManyToOneRelationships", params={
        "$select": "ReferencingAttribute,ReferencedEntity,ReferencingEntityNavigationPropertyName",
        "$filter": f"ReferencingAttribute eq '{column}'"})
    assert response.status_code == 200, response.text
    rows = response.json()["value"]
    found = [r for r in rows if target is None or r["ReferencedEntity"] == target]
    assert found, f"{table}.{column} has no relationship to {target}"
    return str(found[0]["ReferencingEntityNavigationPropertyName"])


async def register_webhook(client: httpx.AsyncClient, entity: str, message: str, *, authtype: int = 4,
                           authvalue: str = "secret-key", filtering: str | None = None,
                           images: list[dict[str, Any]] | None = None, url: str = HOOK_URL, mode: int = 1) -> str:
    """Register like the service does: service endpoint, step by message + filter, optional images."""
    endpoint = entity_id(await client.post(f"{API}/serviceendpoints", json={
        "name": f"bcsync {entity} {message}", "url": url, "contract": 8, "authtype": authtype,
        "authvalue": authvalue, "messageformat": 2, "connectionmode": 1, "userclaim": 1}))
    found = (await client.get(f"{API}/sdkmessages", params={"$filter": f"name eq '{message}'"})).json()["value"]
    message_id = found[0]["sdkmessageid"]
    filters = (await client.get(f"{API}/sdkmessagefilters", params={
        "$filter": f"_sdkmessageid_value eq {message_id} and primaryobjecttypecode eq '{entity}'"})).json()["value"]
    step_table = "sdkmessageprocessingstep"
    step: dict[str, Any] = {
        "name": f"bcsync: {message} of {entity}", "stage": 40, "mode": mode, "rank": 1, "supporteddeployment": 0,
        "asyncautodelete": False,
        f"{await nav(client, step_table, 'sdkmessageid')}@odata.bind": f"/sdkmessages({message_id})",
        f"{await nav(client, step_table, 'sdkmessagefilterid')}@odata.bind":
            f"/sdkmessagefilters({filters[0]['sdkmessagefilterid']})",
        f"{await nav(client, step_table, 'eventhandler', 'serviceendpoint')}@odata.bind":
            f"/serviceendpoints({endpoint})",
    }
    if filtering is not None:
        step["filteringattributes"] = filtering
    step_id = entity_id(await client.post(f"{API}/sdkmessageprocessingsteps", json=step))
    image_nav = await nav(client, "sdkmessageprocessingstepimage", "sdkmessageprocessingstepid") if images else ""
    for image in images or []:
        entity_id(await client.post(f"{API}/sdkmessageprocessingstepimages", json={
            "name": image["entityalias"], "messagepropertyname": "Target",
            f"{image_nav}@odata.bind": f"/sdkmessageprocessingsteps({step_id})", **image}))
    return step_id
