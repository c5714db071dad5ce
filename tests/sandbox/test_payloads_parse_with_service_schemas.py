"""What the sandboxes send parses with the service's own schemas (the other way round from the samples:
the samples pin the schemas, this pins the sandboxes to them)."""

from __future__ import annotations

import httpx

from sandbox.bc.runtime import BCSandbox
from schemas.business_central import NotificationBatch
from schemas.dataverse import Entity, EntityReference, RemoteExecutionContext
from service.intake import business_central_event, dataverse_event
from tests.sandbox.conftest import COMPANY, Receiver, make
from tests.sandbox.dataverse_helpers import API, entity_id, make_env, register_webhook
from tests.sandbox.test_bc_webhooks import subscribe


async def test_bc_notifications_of_every_change_type_parse(client: httpx.AsyncClient, receiver: Receiver,
                                                          bc: BCSandbox) -> None:
    await subscribe(client)
    customer = await make(client, "customers", {"displayName": "Adatum"})
    await receiver.wait(1)
    await client.patch(f"{COMPANY}/customers({customer['id']})", json={"city": "Oslo"}, headers={"If-Match": "*"})
    await receiver.wait(2)
    await client.delete(f"{COMPANY}/customers({customer['id']})", headers={"If-Match": "*"})
    await receiver.wait(3)
    bc.webhooks.settings.collection_threshold = 2
    for i in range(3):
        await make(client, "customers", {"displayName": f"Bulk {i}"})
    await receiver.wait(4)
    kinds = []
    for body in receiver.notifications:
        batch = NotificationBatch.model_validate(body)
        for notification in batch.value:
            event = business_central_event(notification, correlation_id="c")
            assert event.entity == "customers" and event.company_id
            kinds.append(event.change_type)
    assert set(kinds) == {"created", "updated", "deleted", "collection"}


async def test_dataverse_contexts_parse_including_trimmed_ones() -> None:
    async with make_env() as dv:
        for message in ("Create", "Update", "Delete"):
            images = [{"entityalias": "PostImage", "imagetype": 1}] if message == "Update" else (
                [{"entityalias": "PreImage", "imagetype": 0}] if message == "Delete" else [])
            await register_webhook(dv.service, "account", message, images=images)
        account = entity_id(await dv.human.post(f"{API}/accounts", json={"name": "Litware", "telephone1": "1"}))
        await dv.human.patch(f"{API}/accounts({account})", json={"telephone1": "2"}, headers={"If-Match": "*"})
        await dv.human.delete(f"{API}/accounts({account})")
        big = entity_id(await dv.human.post(f"{API}/accounts", json={"name": "Big", "description": "x" * 300_000}))
        await dv.drain()
        contexts = [(RemoteExecutionContext.model_validate_json(r.content), r) for r in dv.receiver.requests]
    by_message = {(c.message_name, str(c.primary_entity_id)): (c, r) for c, r in contexts}
    create, _ = by_message[("Create", account)]
    assert isinstance(create.target, Entity) and create.target.get("name") == "Litware"
    update, _ = by_message[("Update", account)]
    assert "telephone1" in update.changed_attributes and update.image("post") is not None
    delete, _ = by_message[("Delete", account)]
    assert isinstance(delete.target, EntityReference) and delete.image("pre") is not None
    trimmed, request = by_message[("Create", big)]
    assert "x-ms-dynamics-msg-size-exceeded" in request.headers
    event = dataverse_event(trimmed, trimmed=True, correlation_id=None)
    assert event.read_back and event.record_id == big
