"""`bcsync demo`: start everything, register the webhooks, seed, tell the story, summarize."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.broker import broker_from_settings
from service.connectors.factory import make_clients
from service.demo.processes import DemoStack
from service.demo.story import People, Step, run_story, summary
from service.logging import configure_logging
from service.settings import Settings
from service.setup import run_setup
from service.store.db import Database
from service.store.installation import integration_tag


async def prepare(stack: DemoStack, say: Callable[[str], None]) -> None:
    """Empty the demo's queues, register both systems' webhooks, seed some data."""
    env = stack.env()
    os.environ["REQUESTS_CA_BUNDLE"] = stack.ca_file  # MSAL (requests) trusts the sandbox's CA
    values: dict[str, Any] = {k.removeprefix("BCSYNC_").lower(): v for k, v in env.items() if k.startswith("BCSYNC_")}
    settings = Settings(_env_file=None, **values)
    broker = broker_from_settings(settings)
    await broker.connect()
    for queue in broker.queues.values():
        await queue.purge()  # events of an earlier demo run refer to records this sandbox does not have
    await broker.close()
    db = Database(settings.database_url)
    bc, dv = make_clients(settings, await integration_tag(settings, db))
    try:  # what `bcsync setup` does: check the mappings against both systems, register the webhooks
        report = await run_setup(settings, bc, dv, db)
        say(f"  Business Central: {len(report['bc_subscriptions']['created'])} webhook subscriptions created")
        say(f"  Dataverse: webhook registered with {len(report['dataverse_webhook']['created'])} steps and images")
        for name, found in report["mappings"].items():
            if not found["available"]:
                say(f"  {name}: not started ({found['reason']})")
            elif found["bc_delivery"] == "poll":
                say(f"  {name}: Business Central cannot notify it; its BC side is polled")
    finally:
        await bc.aclose()
        await dv.aclose()
        await db.close()
    async with httpx.AsyncClient(timeout=60) as http:
        bc_control = f"http://127.0.0.1:{stack.bc_port}/_sandbox"
        (await http.post(f"{bc_control}/webhooks/settings", json={"notify_delay": 0.3})).raise_for_status()
        # No person contacts: BC's contacts are polled (BC cannot notify them), and the first polls would pick
        # up freshly seeded ones, writing in Sales during the story's quiet window.
        seed = {"customers": 25, "items": 25, "salespeople": 3, "contactsPerCustomer": 0}
        (await http.post(f"{bc_control}/seed", json=seed)).raise_for_status()
        dv_control = f"http://127.0.0.1:{stack.dataverse_port}/_sandbox"
        (await http.post(f"{dv_control}/seed", json={"users": 4, "accounts": 10})).raise_for_status()
        for control in (bc_control, dv_control):
            await http.delete(f"{control}/requests")
    say("  seeded: 25 customers and 25 items in BC, 10 accounts and 4 users in Sales")


def main(once: bool) -> int:
    configure_logging("WARNING")  # the story speaks for itself; the processes log to their files

    def say(text: str) -> None:
        print(text, flush=True)

    def stop_on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # like Ctrl-C: the `finally` below stops the processes (they run in own sessions)

    signal.signal(signal.SIGTERM, stop_on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`&`)
    workdir = Path.cwd() / ".bcsync-demo"
    workdir.mkdir(exist_ok=True)
    stack = DemoStack(workdir)
    say(f"bcsync demo — logs in {workdir}")
    say(f"starting the sandbox (BC :{stack.bc_port}, Dataverse :{stack.dataverse_port}, Entra :{stack.entra_port}), "
        f"the api (:{stack.api_port}) and a worker …")
    try:
        stack.start()
    except RuntimeError as exc:
        say(f"bcsync demo: {exc}")
        return 1
    try:
        async def story() -> list[Step]:
            await prepare(stack, say)
            people = People(stack.bc_port, stack.dataverse_port)
            try:
                return await run_story(people, say)
            finally:
                await people.aclose()

        steps = asyncio.run(story())
        say("")
        say(summary(steps))
        say(f"Console: {stack.console_url} (sign in as operator@contoso.example)")
        if once:
            return 0 if all(s.ok for s in steps) else 1
        say("")
        say(f"Still running for you to explore: api {stack.api_url}/docs (admin token demo-admin-token), "
            f"BC http://127.0.0.1:{stack.bc_port}/_sandbox/state, Dataverse http://127.0.0.1:{stack.dataverse_port}"
            "/_sandbox. Ctrl-C stops everything.")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()
        return 0
    finally:
        stack.stop()
