"""RabbitMQ unreachable mid-way: webhooks still get 202, the outbox grows, and every accepted event is
published exactly once when the broker is back."""

import uuid

import httpx

from schemas.events import ChangeEvent
from service.metrics import OUTBOX_PENDING
from service.store import outbox
from service.topology import Topology
from tests.conftest import sample
from tests.harness import WEBHOOK_KEY, TcpProxy, drain, make_settings, running_api, wait_for


def account_update() -> dict:
    body = sample("dataverse-account-update.json")
    body["OperationId"] = str(uuid.uuid4())  # a distinct delivery
    return body


async def pending(app) -> int:
    async with app.state.db.session() as session:
        return await outbox.count_pending(session)


async def test_outage_then_recovery_publishes_every_accepted_event_once(rabbit, namespace, sqlite_url) -> None:
    proxy = TcpProxy()
    await proxy.start()
    settings = make_settings(sqlite_url, namespace, broker_url=proxy.url)
    sent: list[str] = []
    try:
        async with running_api(settings) as (base, app), httpx.AsyncClient(base_url=base) as http:

            async def send(n: int) -> None:
                for _ in range(n):
                    body = account_update()
                    response = await http.post(f"/webhooks/dataverse?code={WEBHOOK_KEY}", json=body)
                    assert response.status_code == 202
                    sent.append(body["OperationId"])

            await send(10)
            await wait_for(lambda: _zero(app))
            proxy.cut()
            await wait_for(lambda: not app.state.broker.ready)
            await send(20)
            assert await pending(app) == 20  # waiting in the outbox, not lost
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["broker"]["ok"] is False
            await wait_for(lambda: OUTBOX_PENDING._value.get() == 20, timeout=5)
            # the same delivery repeated during the outage is still stored once
            duplicate = await http.post(f"/webhooks/dataverse?code={WEBHOOK_KEY}",
                                        json=sample("dataverse-account-update.json") | {"OperationId": sent[-1]})
            assert duplicate.status_code == 202 and duplicate.json()["new"] == 0
            proxy.restore()
            await wait_for(lambda: app.state.broker.ready, timeout=30)
            await wait_for(lambda: _zero(app), timeout=30)
    finally:
        await proxy.close()
    messages = await drain(rabbit, Topology(namespace).mapping_queue("CUSTOMER"))
    events = [ChangeEvent.model_validate_json(m.body) for m in messages]
    keys = [e.dedupe_key for e in events]
    assert len(keys) == 30 and len(set(keys)) == 30
    assert sorted(k.split(":")[1] for k in keys) == sorted(sent)


async def _zero(app) -> bool:
    return await pending(app) == 0
