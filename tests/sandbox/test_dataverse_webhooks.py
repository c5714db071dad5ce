"""Dataverse stand-in: webhooks carry a RemoteExecutionContext in the documented (sample) format."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

try:
    from tests.sandbox.dataverse_helpers import API, HOOK_URL, Env, entity_id, make_env, register_webhook, sample
except ImportError:  # tests/sandbox collected as a rootless directory
    from dataverse_helpers import (  # type: ignore[no-redef]
        API,
        HOOK_URL,
        Env,
        entity_id,
        make_env,
        register_webhook,
        sample,
    )

from sandbox.config import SandboxConfig
from sandbox.dataverse import create_app, identity
from sandbox.tokens import TokenIssuer

ENTITY = "Entity:http://schemas.microsoft.com/xrm/2011/Contracts"
REF = "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts"
OPTION = "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts"
MONEY = "Money:http://schemas.microsoft.com/xrm/2011/Contracts"
DATE = re.compile(r"^/Date\(\d+\)/$")


@pytest.fixture
async def dv() -> AsyncIterator[Env]:
    async with make_env() as env:
        yield env


def attrs(entity: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a["value"] for a in entity["Attributes"]}


def kv(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {i["key"]: i["value"] for i in items}


async def app_user(dv: Env) -> str:
    return str((await dv.service.get(f"{API}/WhoAmI")).json()["UserId"])


async def test_create_by_a_human_matches_the_sample(dv: Env) -> None:
    await register_webhook(dv.service, "account", "Create")
    account_id = entity_id(await dv.human.post(f"{API}/accounts", json={
        "name": "Fabrikam Bikes Ltd.", "creditlimit": 25000, "customertypecode": 3,
        "telephone1": "+44 20 7946 0958"}))
    await dv.drain()
    [request] = dv.receiver.requests
    body = request.read() and dv.receiver.bodies[0]
    expected = sample("dataverse-account-create.json")
    assert set(body) == set(expected)
    target = kv(body["InputParameters"])["Target"]
    assert set(target) == set(kv(expected["InputParameters"])["Target"])
    assert target["__type"] == ENTITY and target["LogicalName"] == "account" and target["Id"] == account_id
    values = attrs(target)
    assert values["name"] == "Fabrikam Bikes Ltd."
    assert values["customertypecode"] == {"__type": OPTION, "Value": 3}
    assert values["statecode"] == {"__type": OPTION, "Value": 0}
    assert values["creditlimit"] == {"__type": MONEY, "Value": 25000.0}
    assert values["creditlimit_base"]["__type"] == MONEY
    assert values["ownerid"] == {"__type": REF, "Id": identity.SALESPERSON_ID, "KeyAttributes": [],
                                 "LogicalName": "systemuser", "Name": None, "RowVersion": None}
    assert values["transactioncurrencyid"]["LogicalName"] == "transactioncurrency"
    assert DATE.match(values["createdon"]) and DATE.match(values["modifiedon"])
    assert DATE.match(body["OperationCreatedOn"])
    assert "versionnumber" not in values
    assert kv(target["FormattedValues"])["customertypecode"] == "Customer"
    assert body["MessageName"] == "Create" and body["Stage"] == 40 and body["Mode"] == 1 and body["Depth"] == 1
    assert body["OutputParameters"] == [{"key": "id", "value": account_id}]
    assert body["PrimaryEntityName"] == "account" and body["PrimaryEntityId"] == account_id
    assert body["UserId"] == body["InitiatingUserId"] == identity.SALESPERSON_ID
    assert body["UserAzureActiveDirectoryObjectId"] == identity.SALESPERSON_AAD_ID
    assert body["OwningExtension"]["LogicalName"] == "sdkmessageprocessingstep"
    assert body["OrganizationId"] == identity.ORGANIZATION_ID
    assert "tag" not in kv(body["SharedVariables"])
    # An asynchronous step: Dataverse's own image only (primary name and id, no __type).
    assert body["PreEntityImages"] == []
    [own] = body["PostEntityImages"]
    assert own["key"] == "AsynchronousStepPrimaryName" and "__type" not in own["value"]
    assert own["value"]["Attributes"] == [{"key": "name", "value": "Fabrikam Bikes Ltd."},
                                          {"key": "accountid", "value": account_id}]
    # WebhookKey: ?code=<key>; the documented headers are present.
    assert str(request.url) == f"{HOOK_URL}?code=secret-key"
    assert request.headers["x-ms-dynamics-entity-name"] == "account"
    assert request.headers["x-ms-dynamics-request-name"] == "Create"
    assert request.headers["x-ms-dynamics-organization"]
    assert request.headers["x-ms-correlation-request-id"]
    assert request.headers["content-type"] == "application/json"
    assert "x-ms-dynamics-msg-size-exceeded" not in request.headers


async def test_update_by_the_integration_with_tag_and_post_image(dv: Env) -> None:
    account_id = entity_id(await dv.human.post(f"{API}/accounts", json={
        "name": "Fabrikam", "telephone1": "1", "address1_city": "Bristol",
        "parentaccountid@odata.bind": None}))
    await register_webhook(dv.service, "account", "Update", images=[{"entityalias": "PostImage", "imagetype": 1}])
    r = await dv.service.patch(f"{API}/accounts({account_id})?tag=bcsync",
                               json={"telephone1": "+44 20 7946 0000", "address1_city": "Bath"})
    assert r.status_code == 204
    await dv.drain()
    [body] = dv.receiver.bodies
    assert set(body) == set(sample("dataverse-account-update-by-integration.json"))
    target = kv(body["InputParameters"])["Target"]
    assert set(attrs(target)) == {"accountid", "telephone1", "address1_city", "modifiedon", "modifiedby",
                                  "modifiedonbehalfby"}
    assert attrs(target)["modifiedby"]["Id"] == await app_user(dv)
    assert body["UserId"] == body["InitiatingUserId"] == await app_user(dv)
    assert kv(body["SharedVariables"])["tag"] == "bcsync"
    assert [i["key"] for i in body["PostEntityImages"]] == ["AsynchronousStepPrimaryName", "PostImage"]
    image = body["PostEntityImages"][1]
    assert "__type" not in image["value"]
    post = attrs(image["value"])
    assert post["name"] == "Fabrikam" and post["address1_city"] == "Bath"
    assert post["ownerid"]["Name"] == "Alex Seller"


async def test_filtering_attributes_are_respected(dv: Env) -> None:
    account_id = entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    await register_webhook(dv.service, "account", "Update", filtering="name,telephone1")
    await dv.human.patch(f"{API}/accounts({account_id})", json={"websiteurl": "https://a.example"})
    await dv.human.patch(f"{API}/accounts({account_id})", json={"telephone1": "2"})
    await dv.drain()
    [body] = dv.receiver.bodies
    assert "telephone1" in attrs(kv(body["InputParameters"])["Target"])


async def test_delete_target_is_a_reference_with_pre_image(dv: Env) -> None:
    account_id = entity_id(await dv.human.post(f"{API}/accounts", json={"name": "Fabrikam"}))
    contact_id = entity_id(await dv.human.post(f"{API}/contacts", json={
        "firstname": "Ana", "lastname": "Trujillo", "emailaddress1": "ana@fabrikam.example",
        "parentcustomerid_account@odata.bind": f"/accounts({account_id})"}))
    await register_webhook(dv.service, "contact", "Delete", images=[
        {"entityalias": "PreImage", "imagetype": 0, "attributes": "firstname,lastname,parentcustomerid"}])
    assert (await dv.human.delete(f"{API}/contacts({contact_id})")).status_code == 204
    await dv.drain()
    [body] = dv.receiver.bodies
    assert set(body) == set(sample("dataverse-contact-delete.json"))
    target = kv(body["InputParameters"])["Target"]
    assert target == {"__type": REF, "Id": contact_id, "KeyAttributes": [], "LogicalName": "contact",
                      "Name": None, "RowVersion": None}
    own, image = body["PreEntityImages"]  # Delete: Dataverse's own image is a pre image
    assert own["key"] == "AsynchronousStepPrimaryName" and attrs(own["value"]) == {
        "fullname": "Ana Trujillo", "contactid": contact_id}
    pre = attrs(image["value"])
    assert set(pre) == {"contactid", "firstname", "lastname", "parentcustomerid"}
    assert pre["parentcustomerid"]["Name"] == "Fabrikam" and pre["parentcustomerid"]["LogicalName"] == "account"
    assert body["PostEntityImages"] == [] and body["OutputParameters"] == []


async def test_submitted_sales_order_matches_the_sample(dv: Env) -> None:
    account = entity_id(await dv.human.post(f"{API}/accounts", json={"name": "Buyer"}))
    order = entity_id(await dv.human.post(f"{API}/salesorders", json={
        "name": "Spring restock", "customerid_account@odata.bind": f"/accounts({account})",
        "requestdeliveryby": "2025-12-10T00:00:00Z"}))
    await register_webhook(dv.service, "salesorder", "Update", filtering="statecode",
                           images=[{"entityalias": "PostImage", "imagetype": 1}])
    assert (await dv.control.post(f"/salesorders/{order}/submit")).status_code == 204
    await dv.drain()
    [body] = dv.receiver.bodies
    target = kv(body["InputParameters"])["Target"]
    assert attrs(target)["statecode"] == {"__type": OPTION, "Value": 1}
    assert kv(target["FormattedValues"])["statecode"] == "Submitted"
    post = attrs(kv(body["PostEntityImages"])["PostImage"])
    assert post["customerid"]["LogicalName"] == "account" and post["requestdeliveryby"] == "/Date(1765324800000)/"
    assert body["UserId"] == identity.SALESPERSON_ID


async def test_http_header_and_query_string_authentication(dv: Env) -> None:
    settings = '<settings><setting name="x-bcsync-webhook-key" value="k1" /><setting name="x-other" value="2" />' \
               '</settings>'
    await register_webhook(dv.service, "account", "Create", authtype=5, authvalue=settings)
    await register_webhook(dv.service, "account", "Create", authtype=6,
                           authvalue='<settings><setting name="key" value="k 2" /></settings>')
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    await dv.drain()
    by_url = {str(r.url): r for r in dv.receiver.requests}
    header_request = by_url[HOOK_URL]
    assert header_request.headers["x-bcsync-webhook-key"] == "k1" and header_request.headers["x-other"] == "2"
    [query_url] = [u for u in by_url if u != HOOK_URL]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(query_url).query) == {"key": ["k 2"]}
    # The key is not readable back through the Web API (IsValidForRead false).
    endpoints = (await dv.service.get(f"{API}/serviceendpoints")).json()["value"]
    assert endpoints and all(e.get("authvalue") is None for e in endpoints)


async def test_malformed_http_header_authvalue_fails_the_job(dv: Env) -> None:
    await register_webhook(dv.service, "account", "Create", authtype=5, authvalue="x-key: v")
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    await dv.drain()
    assert dv.receiver.requests == []
    [delivery] = (await dv.control.get("/webhooks")).json()["value"]
    assert delivery["outcome"] == "failed" and "0x80050203" in delivery["attempts"][0]["error"]


async def test_over_256_kb_is_trimmed_with_header(dv: Env) -> None:
    await register_webhook(dv.service, "account", "Create", images=[{"entityalias": "PostImage", "imagetype": 1}])
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "Big", "description": "x" * 140_000}))
    await dv.drain()
    [request] = dv.receiver.requests
    body = dv.receiver.bodies[0]
    assert request.headers["x-ms-dynamics-msg-size-exceeded"]
    assert body["InputParameters"] == [] and body["PreEntityImages"] == [] and body["PostEntityImages"] == []
    assert body["ParentContext"] is None
    assert set(body) == set(sample("dataverse-account-update-trimmed.json"))
    assert body["PrimaryEntityName"] == "account"


@pytest.mark.parametrize(("statuses", "attempts", "outcome"), [
    ([503], 2, "delivered"), ([502, 504], 2, "failed"), ([500], 1, "failed"), ([429], 1, "failed"),
    ([200], 1, "delivered"),
])
async def test_one_retry_only_on_502_503_504(dv: Env, statuses: list[int], attempts: int, outcome: str) -> None:
    await register_webhook(dv.service, "account", "Create")
    dv.receiver.statuses = list(statuses)
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    await dv.drain()
    assert len(dv.receiver.requests) == attempts
    [delivery] = (await dv.control.get("/webhooks")).json()["value"]
    assert delivery["outcome"] == outcome and len(delivery["attempts"]) == attempts


async def test_timeout_fails_without_retry() -> None:
    async with make_env(webhook_timeout=0.05) as env:
        await register_webhook(env.service, "account", "Create")
        env.receiver.delay = 0.3
        entity_id(await env.human.post(f"{API}/accounts", json={"name": "A"}))
        await env.drain()
        [delivery] = (await env.control.get("/webhooks")).json()["value"]
        assert delivery["outcome"] == "failed" and "timed out" in delivery["attempts"][0]["error"]
        assert len(env.receiver.requests) == 1


async def test_dropped_webhooks_and_disabled_steps(dv: Env) -> None:
    step = await register_webhook(dv.service, "account", "Create")
    await dv.control.post("/faults", json={"drop_webhooks": 1})
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "B"}))
    await dv.service.patch(f"{API}/sdkmessageprocessingsteps({step})", json={"statecode": 1, "statuscode": 2})
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "C"}))
    await dv.drain()
    outcomes = [d["outcome"] for d in (await dv.control.get("/webhooks")).json()["value"]]
    assert outcomes == ["dropped", "delivered"]
    assert len(dv.receiver.requests) == 1


async def test_step_registration_rules(dv: Env) -> None:
    with pytest.raises(AssertionError):  # filtering attributes on Create are refused (400)
        await register_webhook(dv.service, "account", "Create", filtering="name")
    message = (await dv.service.get(f"{API}/sdkmessages?$filter=name eq 'Update'")).json()["value"][0]
    r = await dv.service.post(f"{API}/sdkmessageprocessingsteps", json={
        "name": "sync pre-op", "stage": 20, "mode": 1,
        "sdkmessageid@odata.bind": f"/sdkmessages({message['sdkmessageid']})",
        "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({identity.ORGANIZATION_ID})"})
    assert r.status_code == 404  # the endpoint does not exist
    endpoint = entity_id(await dv.service.post(f"{API}/serviceendpoints", json={
        "name": "e", "url": HOOK_URL, "contract": 8, "authtype": 4, "authvalue": "k"}))
    r = await dv.service.post(f"{API}/sdkmessageprocessingsteps", json={
        "name": "sync pre-op", "stage": 20, "mode": 1,
        "sdkmessageid@odata.bind": f"/sdkmessages({message['sdkmessageid']})",
        "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint})"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040203"


async def test_other_entities_and_messages_do_not_fire(dv: Env) -> None:
    await register_webhook(dv.service, "account", "Update")
    entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
    entity_id(await dv.human.post(f"{API}/contacts", json={"lastname": "B"}))
    await dv.drain()
    assert dv.receiver.requests == []


async def test_real_http_delivery_to_a_receiving_server() -> None:
    """Over real sockets: the stand-in served by uvicorn posts to a second uvicorn app."""
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    receiver = FastAPI()

    @receiver.post("/webhooks/dataverse")
    async def hook(request: Request) -> dict[str, str]:
        received.append((dict(request.query_params), await request.json()))
        return {}

    dv_port, hook_port = free_port(), free_port()
    config = SandboxConfig(dataverse_port=dv_port)
    tokens = TokenIssuer(config.tenant_id)
    servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
               for app, port in ((create_app(config, tokens), dv_port), (receiver, hook_port))]
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        while not all(s.started for s in servers):
            await asyncio.sleep(0.02)
        token, _ = tokens.issue(config.client_id, f"http://127.0.0.1:{dv_port}/.default")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{dv_port}",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            await register_webhook(client, "account", "Create", url=f"http://127.0.0.1:{hook_port}/webhooks/dataverse")
            account_id = entity_id(await client.post(f"{API}/accounts", json={"name": "Over the wire"}))
            assert (await client.post("/_sandbox/webhooks/drain")).status_code == 200
        [(query, body)] = received
        assert query == {"code": "secret-key"} and body["PrimaryEntityId"] == account_id
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)
