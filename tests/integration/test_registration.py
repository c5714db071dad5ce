"""Webhook registration against the live sandbox: BC subscriptions (with the handshake answered by a
receiver on a real port) and the Dataverse service endpoint with its steps and images. Every second run
changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from service.connectors.business_central import BusinessCentralClient
from service.connectors.dataverse import DataverseClient
from service.connectors.factory import make_clients
from service.registration import bc_resource, register_bc_subscriptions, register_dataverse_webhook
from tests.integration.test_connectors_sandbox import ca_bundle, control, live_settings  # noqa: F401
from tests.sandbox.conftest import Live, free_port, live  # noqa: F401

COMPANY = "c0ffee00-1234-4abc-9def-0123456789ab"
RESOURCES = [("v2.0", "customers"), ("v2.0", "items"), ("bcsync/integration/v1.0", "resources")]
STEPS: list[tuple[str, str, list[str] | None]] = [
    ("account", "Create", None), ("account", "Update", ["name", "telephone1"]), ("account", "Delete", None),
    ("contact", "Update", None)]


@dataclass
class Receiver:
    """Both webhook doors in miniature: the BC handshake, and a record of every POST."""
    port: int
    handshakes: list[str] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)  # the x-bcsync-webhook-key header of each POST

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        token = request.query_params.get("validationToken")
        response: Response
        if token is not None:
            self.handshakes.append(token)
            response = PlainTextResponse(token)
        else:
            self.posts.append((request.url.path, dict(request.query_params), json.loads(await request.body())))
            self.keys.append(request.headers.get("x-bcsync-webhook-key"))
            response = Response(status_code=202)
        await response(scope, receive, send)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver(free_port())
    server = uvicorn.Server(uvicorn.Config(hooks, host="127.0.0.1", port=hooks.port, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield hooks
    server.should_exit = True
    await task


@pytest.fixture
async def clients(live: Live, control: dict[str, httpx.AsyncClient]  # noqa: F811
                  ) -> AsyncIterator[tuple[BusinessCentralClient, DataverseClient]]:
    bc, dv = make_clients(live_settings(live))
    yield bc, dv
    await bc.aclose()
    await dv.aclose()


async def test_bc_subscriptions_are_idempotent(clients: tuple[BusinessCentralClient, DataverseClient],
                                               control: dict[str, httpx.AsyncClient],  # noqa: F811
                                               receiver: Receiver) -> None:
    bc, _ = clients
    url = f"{receiver.url}/webhooks/business-central"
    wanted = [bc_resource(COMPANY, api, name) for api, name in RESOURCES]
    # The documented form ("Working with webhooks in Dynamics 365 Business Central"), the custom API's with its
    # publisher, group and version (subscribed at that API's own subscriptions endpoint).
    assert wanted[0] == f"/api/v2.0/companies({COMPANY})/customers"
    assert wanted[2] == f"/api/bcsync/integration/v1.0/companies({COMPANY})/resources"

    first = await register_bc_subscriptions(bc, url, "state-1", RESOURCES)
    assert sorted(first.created) == sorted(wanted) and not (first.kept or first.renewed or first.removed)
    assert len(receiver.handshakes) == 3 and not first.failed

    second = await register_bc_subscriptions(bc, url, "state-1", RESOURCES)
    assert sorted(second.kept) == sorted(wanted) and not second.changed and len(receiver.handshakes) == 3
    subs = await bc.list_subscriptions()
    assert len(subs) == 3 and {s["clientState"] for s in subs} == {"state-1"}

    # A change made by a human is notified to the receiver with our clientState.
    await control["bc"].post("/entities/customers", json={"displayName": "Contoso"})
    await control["bc"].post("/webhooks/flush")
    for _ in range(100):
        if receiver.posts:
            break
        await asyncio.sleep(0.05)
    note = receiver.posts[0][2]["value"][0]
    assert note["clientState"] == "state-1" and note["changeType"] == "created"

    # Two and a half days later every subscription expires within 24 h: renewed (with a new handshake).
    clock = (await control["bc"].post("/time", json={"advance_seconds": 2.5 * 86400})).json()
    now = datetime.fromisoformat(clock["now"].replace("Z", "+00:00"))
    third = await register_bc_subscriptions(bc, url, "state-1", RESOURCES, now=now)
    assert sorted(third.renewed) == sorted(wanted) and not (third.created or third.kept or third.removed)
    assert len(receiver.handshakes) == 6
    assert not (await register_bc_subscriptions(bc, url, "state-1", RESOURCES, now=now)).changed

    # A new clientState reaches the subscriptions; a resource no longer wanted goes; another url is not ours.
    fourth = await register_bc_subscriptions(bc, url, "state-2", RESOURCES[:2], now=now)
    assert sorted(fourth.renewed) == sorted(wanted[:2]) and fourth.removed == [wanted[2]]
    other = await bc.create_subscription(f"{receiver.url}/other", wanted[0], "x")
    fifth = await register_bc_subscriptions(bc, url, "state-2", [*RESOURCES[:2], ("v2.0", "salesOrderLines")],
                                            now=now)
    assert sorted(fifth.kept) == sorted(wanted[:2]) and len(fifth.failed) == 1 and not fifth.changed
    assert "salesOrderLines" in fifth.failed[0]
    ids = {s["subscriptionId"]: s for s in await bc.list_subscriptions()}
    assert other["subscriptionId"] in ids and len(ids) == 3
    assert {s["clientState"] for s in ids.values() if s["notificationUrl"] == url} == {"state-2"}


async def test_dataverse_webhook_is_idempotent(live: Live, clients: tuple[BusinessCentralClient, DataverseClient],  # noqa: F811
                                               control: dict[str, httpx.AsyncClient],  # noqa: F811
                                               receiver: Receiver) -> None:
    _, dv = clients
    url = f"{receiver.url}/webhooks/dataverse"
    # The sandbox keeps Dataverse rows for the module: start from no endpoint of this name.
    name = f"bcsync-{receiver.port}"
    first = await register_dataverse_webhook(dv, url, "key-1", STEPS, name=name)
    assert first.created == [
        f"serviceendpoint {name}", "step Create of account", "step Update of account",
        "image PostImage of step Update of account", "step Delete of account",
        "image PreImage of step Delete of account", "step Update of contact",
        "image PostImage of step Update of contact"]
    second = await register_dataverse_webhook(dv, url, "key-1", STEPS, name=name)
    assert not second.changed and sorted(second.kept) == sorted(first.created)

    endpoints = [e async for e in dv.list("serviceendpoints", filter=f"name eq '{name}'")]
    endpoint = endpoints[0]
    assert (endpoint["contract"], endpoint["authtype"], endpoint["url"]) == (8, 5, url)  # 5: HttpHeader
    assert "key-1" not in json.dumps(endpoint)
    steps = [s async for s in dv.list("sdkmessageprocessingsteps",
                                      filter=f"_eventhandler_value eq {endpoint['serviceendpointid']}")]
    assert {(s["stage"], s["mode"], s["asyncautodelete"]) for s in steps} == {(40, 1, True)}
    assert sorted(str(s["filteringattributes"] or "") for s in steps) == ["", "", "", "name,telephone1"]

    # A human's update reaches the receiver with the key in the header (never in the URL) and the post image.
    human = f"http://127.0.0.1:{live.config.dataverse_port}/_sandbox/user/api/data/v9.2"
    async with httpx.AsyncClient() as http:
        created = await http.post(f"{human}/accounts", json={"name": "Northwind"})
        account_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
        await http.patch(f"{human}/accounts({account_id})", json={"telephone1": "555-0100"})
    await control["dv"].post("/webhooks/drain", params={"seconds": 5})
    posts = [(q, body) for path, q, body in receiver.posts if path == "/webhooks/dataverse"]
    assert [body["MessageName"] for _, body in posts] == ["Create", "Update"]
    assert all(q == {} for q, _ in posts) and receiver.keys == ["key-1", "key-1"]
    assert "PostImage" in [image["key"] for image in posts[1][1]["PostEntityImages"]]

    # A new key or url updates the endpoint in place; a step no longer wanted goes (with its image).
    third = await register_dataverse_webhook(dv, url, "key-2", STEPS[:3], name=name)
    assert third.renewed == [f"serviceendpoint {name}"]
    assert third.removed == [f"step {name}: Update of contact"] and not third.created
    assert not (await register_dataverse_webhook(dv, url, "key-2", STEPS[:3], name=name)).changed
    async with httpx.AsyncClient() as http:
        await http.patch(f"{human}/accounts({account_id})", json={"name": "Northwind Traders"})
    await control["dv"].post("/webhooks/drain", params={"seconds": 5})
    assert receiver.posts[-1][1] == {} and receiver.keys[-1] == "key-2"
