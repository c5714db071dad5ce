"""Dataverse stand-in: the readings of the webhook payload (async_primary_name_image, zero_operation_id)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

try:
    from tests.sandbox.dataverse_helpers import API, entity_id, make_env, register_webhook
except ImportError:  # tests/sandbox collected as a rootless directory
    from dataverse_helpers import API, entity_id, make_env, register_webhook  # type: ignore[no-redef]

OWN = "AsynchronousStepPrimaryName"
ZERO = "00000000-0000-0000-0000-000000000000"


def keys(images: list[dict[str, Any]]) -> list[str]:
    return [i["key"] for i in images]


def attrs(image: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a["value"] for a in image["value"]["Attributes"]}


@pytest.mark.parametrize("reading", [True, False])
async def test_primary_name_image_of_asynchronous_steps(reading: bool) -> None:
    async with make_env(async_primary_name_image=reading) as dv:
        for message in ("Create", "Update", "Delete"):
            images = [{"entityalias": "PreImage", "imagetype": 0}] if message == "Delete" else (
                [{"entityalias": "PostImage", "imagetype": 1}] if message == "Update" else [])
            await register_webhook(dv.service, "contact", message, images=images)
        contact = entity_id(await dv.human.post(f"{API}/contacts", json={"firstname": "Ana", "lastname": "Tru"}))
        await dv.human.patch(f"{API}/contacts({contact})", json={"lastname": "Trujillo"})
        await dv.human.delete(f"{API}/contacts({contact})")
        await dv.drain()
        bodies = {b["MessageName"]: b for b in dv.receiver.bodies}
        own = [OWN] if reading else []
        assert keys(bodies["Create"]["PostEntityImages"]) == own and bodies["Create"]["PreEntityImages"] == []
        assert keys(bodies["Update"]["PostEntityImages"]) == [*own, "PostImage"]
        assert bodies["Update"]["PreEntityImages"] == []
        assert keys(bodies["Delete"]["PreEntityImages"]) == [*own, "PreImage"]
        assert bodies["Delete"]["PostEntityImages"] == []
        if reading:
            update_image = bodies["Update"]["PostEntityImages"][0]
            assert attrs(update_image) == {"fullname": "Ana Trujillo", "contactid": contact}
            assert "__type" not in update_image["value"] and update_image["value"]["LogicalName"] == "contact"
            assert attrs(bodies["Delete"]["PreEntityImages"][0]) == {"fullname": "Ana Trujillo", "contactid": contact}


async def test_synchronous_steps_carry_no_primary_name_image() -> None:
    async with make_env() as dv:
        await register_webhook(dv.service, "account", "Create", mode=0)
        entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
        await dv.drain()
        [body] = dv.receiver.bodies
        assert body["Mode"] == 0 and body["PostEntityImages"] == []


async def test_an_empty_primary_name_leaves_only_the_id() -> None:
    async with make_env() as dv:
        await register_webhook(dv.service, "account", "Create")
        account = entity_id(await dv.human.post(f"{API}/accounts", json={"telephone1": "1"}))
        await dv.drain()
        [image] = dv.receiver.bodies[0]["PostEntityImages"]
        assert attrs(image) == {"accountid": account}


@pytest.mark.parametrize("reading", [True, False])
async def test_operation_and_request_ids_survive_the_retry(reading: bool) -> None:
    async with make_env(zero_operation_id=reading) as dv:
        await register_webhook(dv.service, "account", "Create")
        dv.receiver.statuses = [503]  # Dataverse retries once on 502/503/504
        entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
        entity_id(await dv.human.post(f"{API}/accounts", json={"name": "B"}))
        await dv.drain()
        first = dv.receiver.bodies[0]  # answered 503, so retried (the other delivery may come in between)
        retry, other = sorted(dv.receiver.bodies[1:], key=lambda b: b["PrimaryEntityId"] != first["PrimaryEntityId"])
        assert first["PrimaryEntityId"] == retry["PrimaryEntityId"] != other["PrimaryEntityId"]
        for body in (first, retry, other):
            uuid.UUID(body["RequestId"])
            assert body["RequestId"] != ZERO
        assert first["RequestId"] == retry["RequestId"] != other["RequestId"]
        assert first["OperationId"] == retry["OperationId"]
        if reading:
            assert {b["OperationId"] for b in (first, retry, other)} == {ZERO}
        else:
            assert first["OperationId"] != ZERO and first["OperationId"] != other["OperationId"]


async def test_steps_of_one_operation_share_its_request_id() -> None:
    async with make_env(zero_operation_id=True) as dv:
        await register_webhook(dv.service, "account", "Create")
        await register_webhook(dv.service, "account", "Create", url="http://127.0.0.1:8001/other")
        entity_id(await dv.human.post(f"{API}/accounts", json={"name": "A"}))
        await dv.drain()
        one, two = dv.receiver.bodies
        assert one["RequestId"] == two["RequestId"]
        assert one["OwningExtension"]["Id"] != two["OwningExtension"]["Id"]  # what tells the two deliveries apart
