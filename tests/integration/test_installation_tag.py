"""The integration tag is per installation: random, generated once in the store, shared by every process, and
the only tag the Dataverse door takes for our own echo (a user who adds the old fixed `?tag=bcsync` to their
own write is synchronized like anyone else)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from sqlalchemy import text

from service.settings import SettingsError, load_settings
from service.store.db import Database
from service.store.installation import integration_tag
from service.store.migrate import upgrade_async
from tests.conftest import sample
from tests.harness import WEBHOOK_KEY, make_settings, running_api

DV = "/webhooks/dataverse"
TAG = re.compile(r"^bcsync-[0-9a-f]{32}$")
SOMEONE = "11111111-1111-4111-8111-111111111111"

# One process of the installation (an api, a worker, `bcsync setup`) reading the tag at its start. All of them
# connect first and then ask at the same moment, so that "nobody has one yet" is what each of them sees.
PROCESS = """
import asyncio, sys, time
from service.settings import Settings
from service.store.db import Database
from service.store.installation import integration_tag

async def main() -> None:
    url, start = sys.argv[1], float(sys.argv[2])
    db = Database(url)
    await db.ping()
    await asyncio.sleep(max(0.0, start - time.time()))
    try:
        print(await integration_tag(Settings(_env_file=None, database_url=url), db))
    finally:
        await db.close()

asyncio.run(main())
"""


def a_users_change(tag: str | None) -> dict:
    """A person's change (not the integration's user) whose SharedVariables carry `tag`."""
    body = sample("dataverse-account-update-by-integration.json") | {"UserId": SOMEONE, "InitiatingUserId": SOMEONE}
    body["SharedVariables"] = [{"key": "tag", "value": tag}] if tag is not None else []
    body["OperationId"] = str(uuid.uuid4())  # its own dedupe key
    return body


async def test_processes_starting_together_all_get_the_same_random_tag(database_url: str, tmp_path) -> None:
    await upgrade_async(database_url)
    start = time.time() + 4.0  # after every process has imported and connected
    runs = [await asyncio.create_subprocess_exec(sys.executable, "-c", PROCESS, database_url, str(start),
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(4)]
    outputs = [await run.communicate() for run in runs]
    assert all(run.returncode == 0 for run in runs), [err.decode()[-2000:] for _, err in outputs]
    tags = {out.decode().strip() for out, _ in outputs}
    assert len(tags) == 1, tags
    [tag] = tags
    assert TAG.fullmatch(tag), tag
    db = Database(database_url)
    try:
        assert await integration_tag(make_settings(database_url, "unused"), db) == tag  # and later processes
        async with db.session() as session:
            rows = (await session.execute(text("SELECT key, value FROM installation"))).all()
        assert [tuple(row) for row in rows] == [("integration_tag", tag)]
    finally:
        await db.close()


async def test_installations_get_different_tags_and_the_setting_overrides(tmp_path) -> None:
    tags = []
    for name in ("one", "two"):
        url = f"sqlite+aiosqlite:///{tmp_path}/{name}.db"
        await upgrade_async(url)
        db = Database(url)
        try:
            tags.append(await integration_tag(make_settings(url, "unused"), db))
            explicit = make_settings(url, "unused", integration_tag="ours-0123456789abcdef")
            assert await integration_tag(explicit, db) == "ours-0123456789abcdef"
        finally:
            await db.close()
    assert tags[0] != tags[1] and all(TAG.fullmatch(t) for t in tags)


@pytest.mark.parametrize("guessable", ["bcsync", "short-tag", "has space in it 0123"])
def test_a_guessable_tag_setting_stops_the_process(clean_env, monkeypatch: pytest.MonkeyPatch,
                                                   guessable: str) -> None:
    monkeypatch.setenv("BCSYNC_INTEGRATION_TAG", guessable)
    with pytest.raises(SettingsError, match="BCSYNC_INTEGRATION_TAG"):
        load_settings()


async def test_the_door_ignores_only_the_installations_own_tag(rabbit, namespace, sqlite_url) -> None:
    settings = make_settings(sqlite_url, namespace, tenant_id="t", client_id="c", client_secret="s",
                             bc_company_id="00000000-0000-4000-8000-000000000001",
                             dataverse_url="https://contoso.crm.dynamics.com")
    async with running_api(settings) as (base, app), httpx.AsyncClient(base_url=base) as http:
        own = app.state.identity.tag
        assert TAG.fullmatch(own) and own != "bcsync"
        assert app.state.dv.tag == own  # the api's own Dataverse writes (setup, couplings) carry it
        ours = await http.post(f"{DV}?code={WEBHOOK_KEY}", json=a_users_change(own))
        assert ours.status_code == 200 and ours.json()["outcome"] == "ignored", ours.text
        for tag in ("bcsync", None):  # the old fixed tag is anybody's: a user's change like any other
            theirs = await http.post(f"{DV}?code={WEBHOOK_KEY}", json=a_users_change(tag))
            assert theirs.status_code == 202 and theirs.json()["outcome"] == "accepted", (tag, theirs.text)
