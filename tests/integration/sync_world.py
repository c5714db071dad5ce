"""An in-process world for sync engine tests: the sandbox on real ports (in a thread), the real connectors
(MSAL over HTTPS against the sandbox Entra), a fresh store, the engine with every rule, and human users."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.rules.context import SyncContext
from consumers.sync import SyncEngine
from sandbox.config import SandboxConfig
from schemas.events import ChangeEvent
from schemas.mappings import BY_NAME
from service.connectors.factory import make_clients
from service.settings import Settings
from service.store.db import Database
from service.store.migrate import upgrade_async
from tests.sandbox_thread import start_sandbox_thread


class Human:
    """A person working in BC or Sales through the sandbox's control endpoints."""

    def __init__(self, config: SandboxConfig) -> None:
        self.bc = httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.bc_port}/_sandbox", timeout=30)
        self.dv = httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.dataverse_port}/_sandbox", timeout=30)

    async def bc_create(self, entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.bc.post(f"/entities/{entity_set}", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def bc_update(self, entity_set: str, record_id: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.bc.patch(f"/entities/{entity_set}/{record_id}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def bc_delete(self, entity_set: str, record_id: str) -> None:
        assert (await self.bc.delete(f"/entities/{entity_set}/{record_id}")).status_code == 204

    async def bc_get(self, entity_set: str, record_id: str) -> dict[str, Any] | None:
        response = await self.bc.get(f"/entities/{entity_set}/{record_id}")
        return response.json() if response.status_code == 200 else None

    async def bc_find(self, entity_set: str, filter_: str) -> list[dict[str, Any]]:
        response = await self.bc.get(f"/entities/{entity_set}", params={"filter": filter_})
        assert response.status_code == 200, response.text
        body = response.json()
        return body["value"] if isinstance(body, dict) else body

    async def dv_create(self, entity_set: str, body: dict[str, Any], user: str | None = None) -> dict[str, Any]:
        headers = {"Prefer": "return=representation", **({"x-sandbox-user": user} if user else {})}
        response = await self.dv.post(f"/user/api/data/v9.2/{entity_set}", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def dv_update(self, entity_set: str, record_id: str, body: dict[str, Any]) -> None:
        response = await self.dv.patch(f"/user/api/data/v9.2/{entity_set}({record_id})", json=body,
                                       headers={"If-Match": "*"})
        assert response.status_code in (200, 204), response.text

    async def dv_delete(self, entity_set: str, record_id: str) -> None:
        assert (await self.dv.delete(f"/user/api/data/v9.2/{entity_set}({record_id})")).status_code == 204

    async def dv_get(self, entity_set: str, record_id: str) -> dict[str, Any] | None:
        response = await self.dv.get(f"/user/api/data/v9.2/{entity_set}({record_id})")
        return response.json() if response.status_code == 200 else None

    async def dv_find(self, entity_set: str, filter_: str) -> list[dict[str, Any]]:
        response = await self.dv.get(f"/user/api/data/v9.2/{entity_set}", params={"$filter": filter_})
        assert response.status_code == 200, response.text
        return response.json()["value"]

    async def aclose(self) -> None:
        await self.bc.aclose()
        await self.dv.aclose()


@dataclasses.dataclass
class World:
    engine: SyncEngine
    ctx: SyncContext
    db: Database
    human: Human
    config: SandboxConfig

    async def bc_event(self, mapping: str, entity_set: str, record_id: str, change: str = "updated") -> None:
        await self.engine.handle(BY_NAME[mapping], ChangeEvent(
            source="business_central", entity=entity_set, record_id=record_id, change_type=change,  # type: ignore[arg-type]
            occurred_at=datetime.now(UTC), dedupe_key=f"t-{record_id}-{time.time()}", correlation_id="t"))

    async def dv_event(self, mapping: str, table: str, record_id: str, change: str = "updated") -> None:
        await self.engine.handle(BY_NAME[mapping], ChangeEvent(
            source="dataverse", entity=table, record_id=record_id, change_type=change,  # type: ignore[arg-type]
            occurred_at=datetime.now(UTC), dedupe_key=f"t-{record_id}-{time.time()}", correlation_id="t"))

    def set_policy(self, mapping: str, **changes: Any) -> None:
        """Change a mapping's settings for this world (what the admin API does for an installation)."""
        rule = self.engine.rules[mapping]
        rule.mapping = dataclasses.replace(rule.mapping, **changes)


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """The engine against a sandbox in a thread; parametrized indirectly, the sandbox's readings."""
    config, stop = start_sandbox_thread(tmp_path, **getattr(request, "param", {}))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", config.ca_file)
    settings = Settings(
        _env_file=None, tenant_id=config.tenant_id, client_id=config.client_id, client_secret=config.client_secret,
        authority_host=f"https://127.0.0.1:{config.entra_port}",
        bc_url=f"http://127.0.0.1:{config.bc_port}/v2.0/{{tenant}}/production", bc_company_id=config.company_id,
        dataverse_url=f"http://127.0.0.1:{config.dataverse_port}",
    )
    url = f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"
    await upgrade_async(url)
    db = Database(url)
    bc, dv = make_clients(settings, "bcsync-sync-world-tag")
    engine = SyncEngine(SyncContext(bc=bc, dv=dv, db=db, local_currency="USD"))
    ctx = engine.ctx
    human = Human(config)
    try:
        yield World(engine, ctx, db, human, config)
    finally:
        await human.aclose()
        await bc.aclose()
        await dv.aclose()
        await db.close()
        stop()
