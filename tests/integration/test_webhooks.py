"""The webhook doors against the real api over HTTP and the real RabbitMQ."""

import json

import httpx
import pytest

from schemas.events import ChangeEvent
from service.metrics import WEBHOOK_REQUESTS
from service.store import jobs, outbox
from service.store.db import Database
from service.topology import Topology
from tests.conftest import sample, sample_text
from tests.harness import WEBHOOK_KEY, drain, make_settings, running_api, wait_for

DV = "/webhooks/dataverse"
BC = "/webhooks/business-central"

EXPECTED_DATAVERSE = [
    ("dataverse-account-create.json", "CUSTOMER", "created"),
    ("dataverse-account-update.json", "CUSTOMER", "updated"),
    ("dataverse-contact-delete.json", "CONTACT", "deleted"),
    ("dataverse-salesorder-submitted.json", "SALESORDER-ORDER", "updated"),
]


def counter(source: str, outcome: str) -> float:
    return WEBHOOK_REQUESTS.labels(source, outcome)._value.get()


async def published(app, expected: int) -> None:
    async def done() -> bool:
        async with app.state.db.session() as session:
            return await outbox.count_pending(session) == 0
    await wait_for(done)


async def messages_by_queue(rabbit, namespace: str, queues: list[str]) -> dict[str, list]:
    topology = Topology(namespace)
    return {q: await drain(rabbit, topology.mapping_queue(q)) for q in queues}


ALL = ["SALESPEOPLE", "CURRENCY", "UNITOFMEASURE", "CUSTOMER", "CONTACT", "ITEM-PRODUCT", "RESOURCE-PRODUCT",
       "CUSTPRCGRP-PRICE", "SALESPRC-PRODPRICE", "SALESORDER-ORDER", "POSTEDSALESINV-INV"]


@pytest.mark.parametrize(("name", "queue", "change"), EXPECTED_DATAVERSE)
async def test_an_accepted_dataverse_webhook_lands_in_its_mapping_queue_once(
        rabbit, namespace, sqlite_url, name: str, queue: str, change: str) -> None:
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        for _ in range(3):  # the same delivery three times
            response = await http.post(f"{DV}?code={WEBHOOK_KEY}", content=sample_text(name),
                                       headers={"content-type": "application/json"})
            assert response.status_code == 202, response.text
        await published(app, 1)
        found = await messages_by_queue(rabbit, namespace, ALL)
    assert {q: len(m) for q, m in found.items() if m} == {queue: 1}
    message = found[queue][0]
    assert message.delivery_mode == 2  # persistent
    event = ChangeEvent.model_validate_json(message.body)
    assert message.message_id == event.dedupe_key
    assert (event.source, event.change_type, event.record_id) == ("dataverse", change, sample(name)["PrimaryEntityId"])


async def test_header_key_works_too_and_the_trimmed_payload_asks_for_a_read_back(rabbit, namespace, sqlite_url) -> None:
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        response = await http.post(DV, content=sample_text("dataverse-account-update-trimmed.json"),
                                   headers={"x-bcsync-webhook-key": WEBHOOK_KEY, "x-ms-dynamics-msg-size-exceeded": "",
                                            "content-type": "application/json"})
        assert response.status_code == 202
        await published(app, 1)
        found = await messages_by_queue(rabbit, namespace, ["CUSTOMER"])
    event = ChangeEvent.model_validate_json(found["CUSTOMER"][0].body)
    assert event.read_back and event.snapshot is None


async def test_the_integrations_own_change_and_unused_tables_are_ignored(rabbit, namespace, sqlite_url) -> None:
    ignored_before = counter("dataverse", "ignored")
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        own = await http.post(f"{DV}?code={WEBHOOK_KEY}", content=sample_text("dataverse-account-update-by-integration.json"))
        assert own.status_code == 200 and own.json()["outcome"] == "ignored"
        lead = sample("dataverse-account-create.json") | {"PrimaryEntityName": "lead"}
        other = await http.post(f"{DV}?code={WEBHOOK_KEY}", json=lead)
        assert other.status_code == 200 and "lead" in other.json()["detail"]
        # The tag alone is enough (WhoAmI not known yet, or another integration user).
        tagged = sample("dataverse-account-update-by-integration.json") | {
            "UserId": "11111111-1111-4111-8111-111111111111", "InitiatingUserId": "11111111-1111-4111-8111-111111111111",
            "SharedVariables": [{"key": "tag", "value": app.state.identity.tag}]}  # the installation's own tag
        assert (await http.post(f"{DV}?code={WEBHOOK_KEY}", json=tagged)).status_code == 200
        async with app.state.db.session() as session:
            assert await outbox.count_pending(session) == 0
        found = await messages_by_queue(rabbit, namespace, ALL)
    assert not any(found.values())
    assert counter("dataverse", "ignored") == ignored_before + 3


async def test_a_business_central_batch_is_routed_per_entity_and_deduplicated(rabbit, namespace, sqlite_url) -> None:
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        for _ in range(3):
            response = await http.post(BC, content=sample_text("bc-notifications.json"),
                                       headers={"content-type": "application/json", "x-ms-correlation-id": "corr-1"})
            assert response.status_code == 202
        await published(app, 5)
        found = await messages_by_queue(rabbit, namespace, ALL)
    assert {q: len(m) for q, m in found.items() if m} == {
        "CUSTOMER": 2, "ITEM-PRODUCT": 1, "POSTEDSALESINV-INV": 1, "CONTACT": 1}
    customers = [ChangeEvent.model_validate_json(m.body) for m in found["CUSTOMER"]]
    assert [e.change_type for e in customers] == ["created", "updated"]  # in order
    assert all(m.delivery_mode == 2 for ms in found.values() for m in ms)
    contacts = ChangeEvent.model_validate_json(found["CONTACT"][0].body)
    assert contacts.change_type == "collection" and contacts.full_reconcile and contacts.correlation_id == "corr-1"
    invoices = ChangeEvent.model_validate_json(found["POSTEDSALESINV-INV"][0].body)
    assert invoices.collection_filter == "lastModifiedDateTime gt 2025-11-25T21:48:59.95Z"


async def test_notifications_for_another_company_are_ignored(rabbit, namespace, sqlite_url) -> None:
    settings = make_settings(sqlite_url, namespace, bc_company_id="00000000-0000-4000-8000-000000000000")
    async with running_api(settings) as (base, app), httpx.AsyncClient(base_url=base) as http:
        response = await http.post(BC, content=sample_text("bc-notifications.json"))
        assert response.status_code == 202 and response.json()["outcome"] == "ignored"
        async with app.state.db.session() as session:
            assert await outbox.count_pending(session) == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_handshake_echoes_the_token_as_plain_text(rabbit, namespace, sqlite_url, method: str) -> None:
    async with running_api(make_settings(sqlite_url, namespace)) as (base, _), httpx.AsyncClient(base_url=base) as http:
        response = await http.request(method, f"{BC}?validationToken=abc-123_x.y~z")
        assert response.status_code == 200 and response.text == "abc-123_x.y~z"
        assert response.headers["content-type"].startswith("text/plain")
        markup = await http.request(method, BC, params={"validationToken": "<script>alert(1)</script>"})
        assert markup.status_code == 400 and "<script>" not in markup.text


async def test_bad_input_gets_a_clear_4xx_and_leaves_nothing(rabbit, namespace, sqlite_url) -> None:
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        account = sample_text("dataverse-account-create.json")
        unauthorized = counter("dataverse", "unauthorized")
        assert (await http.post(DV, content=account)).status_code == 401
        assert (await http.post(f"{DV}?code=wrong", content=account)).status_code == 401
        assert (await http.post(DV, content=account, headers={"x-bcsync-webhook-key": "wrong"})).status_code == 401
        assert counter("dataverse", "unauthorized") == unauthorized + 3
        malformed = await http.post(f"{DV}?code={WEBHOOK_KEY}", content=b"{not json")
        assert malformed.status_code == 400 and malformed.json()["outcome"] == "invalid"
        shape = await http.post(f"{DV}?code={WEBHOOK_KEY}", json={"MessageName": "Create"})
        assert shape.status_code == 400 and "PrimaryEntityName" in shape.json()["detail"]
        assert (await http.post(f"{DV}?code={WEBHOOK_KEY}", json=[1, 2])).status_code == 400
        oversize = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
        assert (await http.post(f"{DV}?code={WEBHOOK_KEY}", content=oversize)).status_code == 413

        async def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(20):
                yield b"x" * 65536
        assert (await http.post(f"{DV}?code={WEBHOOK_KEY}", content=chunks())).status_code == 413

        notes = sample("bc-notifications.json")
        wrong_state = json.loads(json.dumps(notes))
        wrong_state["value"][2]["clientState"] = "wrong"  # one bad notification refuses the batch
        assert (await http.post(BC, json=wrong_state)).status_code == 401
        assert (await http.get(BC)).status_code == 400  # a GET is only for the handshake
        async with app.state.db.session() as session:
            assert await outbox.count_pending(session) == 0
    found = await messages_by_queue(rabbit, namespace, ALL)
    assert not any(found.values())


async def test_the_business_central_door_answers_anything_without_our_client_state_202_and_does_nothing(
        rabbit, namespace, sqlite_url) -> None:
    """BC deletes every subscription at its URL on a 4xx other than 408/429: no 400 or 413 for a body, however
    odd. Without one entry carrying our clientState, it may cause nothing either: no event, no catch-up."""
    invalid = counter("business_central", "invalid")
    bodies = [b"nope", b"", json.dumps({"value": [{"resource": "x"}]}).encode(), b'{"value": []}' + b" " * (1024 * 1024),
              b'{"value": [1, 2, 3]}', b"[]", b'{"value": [' + b"[" * 100_000]
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        for body in bodies:
            response = await http.post(BC, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 202, (body[:40], response.text)
            assert response.json()["outcome"] == "invalid" and response.json()["events"] == 0
        async with app.state.db.session() as session:
            assert await outbox.count_pending(session) == 0
            assert not any(r.requested_at for r in (await jobs.catch_up_states(session)).values())
    assert counter("business_central", "invalid") == invalid + len(bodies)


async def test_a_batch_with_bad_entries_stores_the_good_ones_and_asks_a_catch_up(rabbit, namespace, sqlite_url) -> None:
    notes = sample("bc-notifications.json")
    notes["value"][1]["changeType"] = "renamed"  # a customer entry: only CUSTOMER must catch up
    notes["value"].insert(0, "not an object")  # entity unknown: every mapping with a BC entity catches up
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        response = await http.post(BC, json=notes)
        assert response.status_code == 202, response.text
        assert {k: v for k, v in response.json().items() if k not in ("detail",)} == {
            "outcome": "accepted", "events": 4, "new": 4, "duplicates": 0, "ignored": 0, "dropped": 2}
        async with app.state.db.session() as session:
            requested = {n for n, r in (await jobs.catch_up_states(session)).items() if r.requested_at}
        assert requested == set(ALL)
        del notes["value"][0]  # now only the customer entry is bad
        await http.post(BC, json=notes)
        await published(app, 4)
    assert {q: len(m) for q, m in (await messages_by_queue(rabbit, namespace, ALL)).items() if m} == {
        "CUSTOMER": 1, "ITEM-PRODUCT": 1, "POSTEDSALESINV-INV": 1, "CONTACT": 1}


async def test_database_down_answers_503_never_another_4xx(rabbit, namespace, sqlite_url) -> None:
    async with running_api(make_settings(sqlite_url, namespace)) as (base, app), httpx.AsyncClient(base_url=base) as http:
        healthy_db = app.state.db
        broken = Database("postgresql+asyncpg://nobody@127.0.0.1:1/nowhere")  # nothing listens there
        app.state.db = app.state.writer.db = broken
        try:
            dv = await http.post(f"{DV}?code={WEBHOOK_KEY}", content=sample_text("dataverse-account-create.json"))
            assert dv.status_code == 503 and dv.json()["outcome"] == "unavailable"
            bc = await http.post(BC, content=sample_text("bc-notifications.json"))
            assert bc.status_code == 503
            partly_bad = sample("bc-notifications.json")
            partly_bad["value"][0]["changeType"] = "renamed"  # events and catch-up in one transaction: 503 too
            assert (await http.post(BC, json=partly_bad)).status_code == 503
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        finally:
            await broken.close()
            app.state.db = app.state.writer.db = healthy_db
        assert (await http.get("/readyz")).json() == {
            "status": "ready", "checks": {"database": {"ok": True}, "broker": {"ok": True}}}


async def test_health_metrics_and_admin_status(rabbit, namespace, sqlite_url) -> None:
    async with running_api(make_settings(sqlite_url, namespace)) as (base, _), httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        metrics = (await http.get("/metrics")).text
        for name in ("bcsync_webhook_requests_total", "bcsync_events_published_total", "bcsync_sync_records_total",
                     "bcsync_sync_lag_seconds", "bcsync_dead_letters_total", "bcsync_outbox_pending"):
            assert f"# TYPE {name.removesuffix('_total')}" in metrics
        assert (await http.get("/admin/status")).status_code == 401
        assert (await http.get("/admin/status", headers={"authorization": "Bearer wrong"})).status_code == 401
        status = await http.get("/admin/status", headers={"authorization": "Bearer test-admin-token"})
        assert status.status_code == 200
        body = status.json()
        assert body["broker_connected"] is True and len(body["mappings"]) == 11
        assert all(m["queue_depth"] == 0 for m in body["mappings"])
