"""The demo's scripted story: people work in Sales and in Business Central; bcsync keeps both equal.

Each step does what a person would do (through the sandbox's control endpoints), then waits until the
change shows up on the other side, and records how long that took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from service.demo.documents_story import document_flow

Check = Callable[[], Awaitable[Any]]


@dataclass
class Step:
    title: str
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""


class People:
    """Alex the salesperson in Sales, and an accountant in BC (the sandbox's control endpoints)."""

    def __init__(self, bc_port: int, dataverse_port: int) -> None:
        self.bc = httpx.AsyncClient(base_url=f"http://127.0.0.1:{bc_port}/_sandbox", timeout=30)
        self.dv = httpx.AsyncClient(base_url=f"http://127.0.0.1:{dataverse_port}/_sandbox", timeout=30)

    async def bc_create(self, entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.bc.post(f"/entities/{entity_set}", json=body)
        response.raise_for_status()
        return response.json()

    async def bc_update(self, entity_set: str, record_id: str, body: dict[str, Any]) -> None:
        (await self.bc.patch(f"/entities/{entity_set}/{record_id}", json=body)).raise_for_status()

    async def bc_find(self, entity_set: str, filter_: str) -> list[dict[str, Any]]:
        response = await self.bc.get(f"/entities/{entity_set}", params={"filter": filter_})
        response.raise_for_status()
        body = response.json()
        return body["value"] if isinstance(body, dict) else body

    async def dv_create(self, entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.dv.post(f"/user/api/data/v9.2/{entity_set}", json=body,
                                      headers={"Prefer": "return=representation"})
        response.raise_for_status()
        return response.json()

    async def dv_update(self, entity_set: str, record_id: str, body: dict[str, Any]) -> None:
        (await self.dv.patch(f"/user/api/data/v9.2/{entity_set}({record_id})", json=body,
                             headers={"If-Match": "*"})).raise_for_status()

    async def dv_find(self, entity_set: str, filter_: str) -> list[dict[str, Any]]:
        response = await self.dv.get(f"/user/api/data/v9.2/{entity_set}", params={"$filter": filter_})
        response.raise_for_status()
        return response.json()["value"]

    async def dv_submit_order(self, order_id: str) -> None:
        """The salesperson's "Submit order" button (the order becomes Submitted, statecode 1)."""
        (await self.dv.post(f"/salesorders/{order_id}/submit")).raise_for_status()

    async def bc_post_order(self, order_id: str) -> dict[str, Any]:
        """The accountant's "Post" (ship and invoice): the order goes, the posted invoice it became."""
        response = await self.bc.post(f"/salesOrders/{order_id}/post")
        response.raise_for_status()
        return response.json()

    async def writes_by_integration(self) -> int:
        """Write requests the service made to either system so far (the sandboxes' request logs)."""
        total = 0
        for client, path in ((self.bc, "/requests"), (self.dv, "/requests")):
            body = (await client.get(path, params={"limit": 100_000})).json()
            rows = body if isinstance(body, list) else body.get("requests", body.get("value", []))
            total += sum(1 for r in rows if r.get("method") in ("POST", "PATCH", "DELETE"))
        return total

    async def aclose(self) -> None:
        await self.bc.aclose()
        await self.dv.aclose()


async def until(check: Check, timeout: float = 30.0) -> Any:  # noqa: ASYNC109 - a polling deadline
    """Poll until `check` returns something truthy; that value (or None after the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    return None


async def run_story(people: People, say: Callable[[str], None]) -> list[Step]:
    steps: list[Step] = []

    async def step(title: str, act: Callable[[], Awaitable[None]], check: Check,
                   describe: Callable[[Any], str], within: float = 30.0) -> Any:
        current = Step(title)
        steps.append(current)
        say(f"▶ {title}")
        started = time.monotonic()
        try:
            await act()
        except (httpx.HTTPError, LookupError) as exc:  # LookupError: what the person needs is not there
            current.detail = f"the person's own action failed: {exc}"
            say(f"  ✘ {current.detail}")
            return None
        found = await until(check, within)
        current.seconds = time.monotonic() - started
        current.ok = bool(found)
        current.detail = describe(found) if found else f"did not happen within {within:.0f} s"
        say(f"  {'✔' if current.ok else '✘'} {current.detail} ({current.seconds:.1f} s)")
        return found

    account: dict[str, Any] = {}

    async def create_account() -> None:
        account.update(await people.dv_create("accounts", {
            "name": "Fabrikam Bikes Ltd.", "telephone1": "+44 20 7946 0958", "address1_city": "Bristol",
            "address1_country": "GB", "emailaddress1": "orders@fabrikam-bikes.example", "customertypecode": 3}))

    async def customer_in_bc() -> Any:
        found = await people.bc_find("customers", "displayName eq 'Fabrikam Bikes Ltd.'")
        return found[0] if found and found[0].get("salespersonCode") else None

    customer = await step(
        "Alex, a salesperson, creates the account 'Fabrikam Bikes Ltd.' in Sales", create_account, customer_in_bc,
        lambda c: f"customer {c['number']} appears in Business Central, salesperson {c['salespersonCode']} "
                  "(Alex's salesperson record was created first)")

    async def add_contact() -> None:
        await people.dv_create("contacts", {
            "firstname": "Ana", "lastname": "Trujillo", "emailaddress1": "ana@fabrikam-bikes.example",
            "jobtitle": "Purchasing manager",
            "parentcustomerid_account@odata.bind": f"/accounts({account.get('accountid')})"})

    async def person_in_bc() -> Any:
        found = await people.bc_find("contacts", "email eq 'ana@fabrikam-bikes.example'")
        return found[0] if found else None

    await step("Alex adds the contact Ana Trujillo to the account", add_contact, person_in_bc,
               lambda p: f"person contact {p['number']} '{p['displayName']}' under company {p['companyNumber']} in BC")

    async def new_item() -> None:
        await people.bc_create("unitsOfMeasure", {"code": "CRATE", "displayName": "Crate"})
        await people.bc_create("items", {"displayName": "Bike helmet", "type": "Inventory", "unitPrice": 49.5,
                                         "baseUnitOfMeasureCode": "CRATE"})

    async def product_in_sales() -> Any:
        found = await people.dv_find("products", "name eq 'Bike helmet'")
        return found[0] if found and found[0].get("statecode") == 0 else None

    product = await step("In Business Central, a new unit 'CRATE' and the item 'Bike helmet' sold per CRATE", new_item,
               product_in_sales, lambda p: f"product {p['productnumber']} is Active in Sales at {p['price']}, with a "
                                           "unit group CRATE made first")

    async def change_phone() -> None:
        if customer:
            await people.bc_update("customers", customer["id"], {"phoneNumber": "+44 117 496 0000"})

    async def phone_in_sales() -> Any:
        found = await people.dv_find("accounts", "name eq 'Fabrikam Bikes Ltd.'")
        return found[0] if found and found[0].get("telephone1") == "+44 117 496 0000" else None

    await step("The accountant changes the customer's phone number in BC", change_phone, phone_in_sales,
               lambda a: f"the account in Sales shows {a['telephone1']}")

    async def rename() -> None:
        await people.dv_update("accounts", str(account.get("accountid")), {"name": "Fabrikam Bikes Group"})

    async def renamed_in_bc() -> Any:
        found = await people.bc_find("customers", "displayName eq 'Fabrikam Bikes Group'")
        return found[0] if found else None

    await step("Alex renames the account in Sales", rename, renamed_in_bc,
               lambda c: f"customer {c['number']} is now '{c['displayName']}' in BC")

    await document_flow(people, step, str(account.get("accountid") or ""), product)

    quiet = Step("Nothing echoes back: 5 s without a single write by bcsync")
    steps.append(quiet)
    say(f"▶ {quiet.title}")
    await asyncio.sleep(2)  # let the last notifications arrive
    before = await people.writes_by_integration()
    await asyncio.sleep(5)
    extra = await people.writes_by_integration() - before
    quiet.ok, quiet.seconds, quiet.detail = extra == 0, 5.0, f"{extra} writes in the window"
    say(f"  {'✔' if quiet.ok else '✘'} {quiet.detail}")
    return steps


def summary(steps: list[Step]) -> str:
    width = max(len(s.title) for s in steps)
    lines = [f"{'step':<{width}}  result  seconds", "-" * (width + 17)]
    lines += [f"{s.title:<{width}}  {'ok' if s.ok else 'FAILED':<6}  {s.seconds:7.1f}" for s in steps]
    done = sum(s.ok for s in steps)
    lines.append(f"{done}/{len(steps)} steps happened")
    return "\n".join(lines)
