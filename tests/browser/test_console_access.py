"""The console's doors in Chromium, against the real sandbox, api and worker: who may see what and who may act.

- Not signed in: every page sends the browser to the sandbox's Entra login page (its user picker); a POST
  without a session is refused (401).
- nobody@contoso.example (no app role): a clear 403 page that says so, no navigation, no data.
- A Reader: the overview with a card per mapping; every page without an action button (an open error is
  listed, which an Operator could retry); a forged POST with the page's own CSRF token is refused with the 403
  page and changes nothing.
- Sign-out: the signed-out page, and the console needs a sign-in again.

The scenarios that make data (an order failing on a blocked item) are here too; test_console_operator.py uses
them on its own stack.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from schemas.mappings import MAPPINGS
from tests.browser.conftest import (
    NOBODY,
    OPERATOR,
    READER,
    ConsoleStack,
    screenshot,
    sign_in,
    wait_for,
    wait_until,
)
from tests.e2e.stack import Stack

Json = dict[str, Any]
TIMEOUT = 45.0
DEFAULT_UNIT_ID = "4f3e2d1c-0b9a-4f8e-9d7c-6b5a4f3e2d1c"  # the sandbox's default unit (sandbox/dataverse/identity.py)
# Every page of the console (GET), as the navigation names them, plus a mapping's and a record's page.
PAGES = ("/console/", "/console/errors", "/console/records", "/console/mappings", "/console/mappings/CUSTOMER",
         "/console/full-sync", "/console/subscriptions", "/console/setup-check")
# What an Operator's forms say (service/console/templates/): none of it may show to a Reader.
ACTION_LABELS = ("Retry", "Retry all", "Dismiss", "Hold", "Hold all", "Resume", "Resume all", "Couple", "Decouple",
                 "Start full synchronization", "Restart", "Refresh now", "Save change")


# ---- data made as the humans of BC and Sales would make it ----------------------------------------------------
async def first(stack: Stack, rows: Any, what: str, timeout: float = TIMEOUT) -> Json:
    """The first row `rows()` answers, once it answers one."""
    async def found() -> Json | None:
        result = await rows()
        return result[0] if result else None

    return dict(await stack.wait_until(found, timeout=timeout, interval=0.2, message=what))


async def open_error(stack: Stack, mapping: str, source_id: str, contains: str) -> Json:
    """The open (or skipped) error of `mapping` for the record `source_id`, once the worker recorded it."""
    async def found() -> Json | None:
        response = await stack.admin("errors", params={"mapping": mapping})
        assert response.status_code == 200, response.text
        return next((e for e in response.json() if e["source_id"].lower() == source_id.lower()
                     and e["state"] in ("open", "skipped") and contains in e["message"]), None)

    return dict(await stack.wait_until(found, timeout=TIMEOUT, interval=0.3,
                                       message=f"a {mapping} error for {source_id} with {contains!r}"))


@dataclass(frozen=True)
class BlockedOrder:
    """A Sales order submitted for a product whose BC item is blocked: SALESORDER-ORDER refuses it."""

    tag: str
    item: Json  # the BC item (blocked)
    account: str  # the Sales account (its customer in BC)
    order: str  # the Sales order id
    error: Json  # its open error, as GET /admin/errors shows it


async def blocked_item_order(stack: Stack, tag: str) -> BlockedOrder:
    """As the humans would: an item in BC (it reaches Sales as a product), then blocked in BC; in Sales an account
    and an order with a line of that product, submitted. The worker refuses the order ("item ... is blocked") and
    records an open error; nothing is created in BC."""
    if not await stack.bc.query("unitsOfMeasure", "code eq 'PCS'"):
        await stack.bc.create("unitsOfMeasure", {"code": "PCS", "displayName": "Piece"})
    item = await stack.bc.create("items", {"displayName": f"Bike lock {tag}", "unitPrice": 20.0,
                                           "baseUnitOfMeasureCode": "PCS"})
    product = await first(stack, lambda: stack.dv.query("products", f"productnumber eq '{item['number']}'"),
                          f"product {item['number']} in Sales")
    await stack.bc.patch("items", item["id"], {"blocked": True})
    account = await stack.dv.create("accounts", {"name": f"Fabrikam Cycles {tag}", "customertypecode": 3})
    order = await stack.dv.create("salesorders", {"name": f"PO-{tag}",
                                                  "customerid_account@odata.bind": f"/accounts({account})"})
    await stack.dv.create("salesorderdetails", {
        "salesorderid@odata.bind": f"/salesorders({order})", "lineitemnumber": 1, "quantity": 3,
        "productid@odata.bind": f"/products({product['productid']})", "priceperunit": 20.0,
        "uomid@odata.bind": f"/uoms({DEFAULT_UNIT_ID})"})
    await stack.dv.submit_order(order)
    error = await open_error(stack, "SALESORDER-ORDER", order, "blocked")
    return BlockedOrder(tag, item, account, order, error)


def new_tag() -> str:
    return uuid.uuid4().hex[:6].upper()


# ---- the browser side ----------------------------------------------------------------------------------------
def on_login_page(driver: WebDriver, live: ConsoleStack) -> bool:
    """The sandbox's Entra login page (its user picker), not a console page."""
    return (driver.current_url.startswith(live.stack.authority)
            and bool(driver.find_elements(By.CSS_SELECTOR, f'button[name="user"][value="{OPERATOR}"]')))


def csrf_of(driver: WebDriver) -> str:
    """The session's CSRF token as the page carries it (in the sign-out form of every signed-in page)."""
    token = wait_for(driver, "form.who input[name=csrf]", visible=False).get_attribute("value")
    assert token, "no CSRF token on the page"
    return token


def post_form(driver: WebDriver, action: str, fields: dict[str, str]) -> None:
    """Build a form in the page and submit it, as a page of another origin could not but a forger on this one
    would: the browser then shows what the console answered."""
    driver.execute_script("""
        const [action, fields] = arguments;
        const form = document.createElement("form");
        form.method = "post"; form.action = action;
        for (const [name, value] of Object.entries(fields)) {
            const input = document.createElement("input");
            input.type = "hidden"; input.name = name; input.value = value; form.appendChild(input);
        }
        document.body.appendChild(form);
        HTMLFormElement.prototype.submit.call(form);""", action, fields)


REDIRECTED = 0  # what fetch_status says of a redirect (fetch() does not show a redirect's status)


def fetch_status(driver: WebDriver, path: str, method: str = "GET", fields: dict[str, str] | None = None) -> int:
    """The status of a fetch() from the page, with its cookies; REDIRECTED for a redirect (not followed)."""
    status = driver.execute_async_script("""
        const [path, method, fields, done] = arguments;
        const options = {method, credentials: "same-origin", redirect: "manual"};
        if (fields) options.body = new URLSearchParams(fields);
        fetch(path, options).then((r) => done(r.type === "opaqueredirect" ? 0 : r.status),
                                  (e) => done(String(e)));""", path, method, fields)
    assert isinstance(status, int), status
    return status


def main_text(driver: WebDriver) -> str:
    return str(driver.execute_script("return document.querySelector('main').innerText"))


def action_controls(driver: WebDriver) -> list[str]:
    """Every POST form in the page's main part and every button whose label is an Operator's action."""
    found = [f"POST form to {f.get_attribute('action')}"
             for f in driver.find_elements(By.CSS_SELECTOR, "main form[method=post]")]
    for button in driver.find_elements(By.CSS_SELECTOR, "main button, main input[type=submit]"):
        label = (button.text or button.get_attribute("value") or "").strip()
        if any(label == a or label.startswith(f"{a} ") for a in ACTION_LABELS):
            found.append(f"button {label!r}")
    return found


def mapping_on_hold(live: ConsoleStack, name: str) -> bool:
    response = live.run(live.stack.admin(f"mappings/{name}"))
    assert response.status_code == 200, response.text
    return bool(response.json()["on_hold"])


# ---- the module's stack: one open error ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def blocked(console_stack: ConsoleStack) -> BlockedOrder:
    """Webhooks registered (`bcsync setup`) and an order refused on a blocked item: an open error an Operator
    could retry."""
    console_stack.run(console_stack.stack.register_webhooks(), timeout=120)
    return console_stack.run(blocked_item_order(console_stack.stack, new_tag()), timeout=120)


def test_not_signed_in_every_page_goes_to_the_entra_login_and_no_form_works(
        console_stack: ConsoleStack, browser: WebDriver) -> None:
    base = console_stack.url
    for path in (*PAGES, "/console/records/CUSTOMER/bc/00000000-0000-0000-0000-000000000001", "/console"):
        browser.get(f"{base}{path}")
        wait_until(browser, lambda d: on_login_page(d, console_stack), message=f"{path} → the Entra login page")
        query = parse_qs(urlsplit(browser.current_url).query)
        assert query["redirect_uri"] == [f"{base}/console/auth/callback"], browser.current_url
        assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]
    pickers = [b.get_attribute("value") for b in browser.find_elements(By.CSS_SELECTOR, 'button[name="user"]')]
    assert {READER, OPERATOR, NOBODY} <= set(pickers), pickers
    screenshot(browser, "login")

    # The signed-out page needs no sign-in: from it, the forms of the console answer 401 without a session.
    browser.get(f"{base}/console/signed-out")
    wait_for(browser, "main h1")
    for action in ("/console/mappings/CUSTOMER/hold", "/console/errors/retry-all", "/console/full-sync",
                   "/console/subscriptions/refresh", "/console/logout"):
        assert fetch_status(browser, action, "POST", {"csrf": "x"}) == 401, action
    post_form(browser, "/console/mappings/CUSTOMER/hold", {"csrf": "x", "next": "/console/mappings"})
    wait_until(browser, lambda d: "Not signed in" in d.title, message="the 401 page")
    assert "Sign in to use the console" in main_text(browser)
    assert not mapping_on_hold(console_stack, "CUSTOMER")


def test_a_user_without_a_role_gets_a_clear_403_page(console_stack: ConsoleStack, browser: WebDriver) -> None:
    sign_in(browser, console_stack.url, NOBODY)
    heading = wait_for(browser, "main h1")
    assert heading.text == "Not allowed"
    text = main_text(browser)
    assert "has no role in bcsync" in text and "Reader" in text and "Operator" in text, text
    assert not browser.find_elements(By.CSS_SELECTOR, "header nav"), "a user without a role sees no navigation"
    assert "role-none" in (wait_for(browser, "header .role").get_attribute("class") or "")
    screenshot(browser, "forbidden")
    for path in PAGES:
        assert fetch_status(browser, path) == 403, path
    browser.get(f"{console_stack.url}/console/errors")
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "main h1").text == "Not allowed",
               message="the 403 page on /console/errors")
    assert not browser.find_elements(By.CSS_SELECTOR, "main table"), "no data on the 403 page"


def test_a_reader_sees_every_page_without_an_action(console_stack: ConsoleStack, browser: WebDriver,
                                                     blocked: BlockedOrder) -> None:
    base = console_stack.url
    sign_in(browser, base, READER)
    wait_for(browser, ".cards")
    assert wait_for(browser, "header .role").text == "Reader"
    cards = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".cards section.card h2")]
    assert cards == [m.name for m in MAPPINGS], cards
    nav = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert nav == ["Overview", "Errors", "Records", "Mappings", "Full sync", "Subscriptions", "Setup check"], nav
    assert not action_controls(browser)

    # The open error is listed (an Operator would have Retry and Dismiss here), without an action column.
    browser.get(f"{base}/console/errors")
    row = wait_for(browser, f"tr#error-{blocked.error['id']}")
    assert "blocked" in row.text
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "main table thead th")]
    assert "Actions" not in headers, headers
    assert action_controls(browser) == []

    checks = {"/console/records?q=" + blocked.tag: "main table",  # the account and order found by their tag
              f"/console/records/SALESORDER-ORDER/dataverse/{blocked.order}": "ol.timeline",
              "/console/mappings": "tr#mapping-CUSTOMER", "/console/mappings/CUSTOMER": "#versions",
              "/console/full-sync": "table#review", "/console/subscriptions": "#bc-h",
              "/console/setup-check": "table#check"}
    for path, ready in checks.items():
        browser.get(f"{base}{path}")
        wait_for(browser, ready, 20)
        assert action_controls(browser) == [], f"{path} shows a Reader actions: {action_controls(browser)}"
        assert "csrf" not in main_text(browser).lower()
    assert not browser.find_elements(By.CSS_SELECTOR, "input[name=mappings]"), "no full-sync checkboxes"


def test_a_readers_forged_post_is_refused_and_changes_nothing(console_stack: ConsoleStack,
                                                              browser: WebDriver) -> None:
    base = console_stack.url
    sign_in(browser, base, READER)
    browser.get(f"{base}/console/mappings")
    wait_for(browser, "tr#mapping-CUSTOMER")
    csrf = csrf_of(browser)  # the session's real token: only the role stops it

    post_form(browser, "/console/mappings/CUSTOMER/hold", {"csrf": csrf, "next": "/console/mappings"})
    wait_until(browser, lambda d: d.current_url.endswith("/console/mappings/CUSTOMER/hold"),
               message="the forged form's answer")
    assert wait_for(browser, "main h1").text == "Not allowed"
    assert "Only an Operator may do this; you are signed in as a Reader." in main_text(browser)
    assert not mapping_on_hold(console_stack, "CUSTOMER")

    # The same with fetch(): 403, for every kind of action.
    for action, fields in (("/console/mappings/CUSTOMER/hold", {"next": "/console/mappings"}),
                           ("/console/mappings/all/hold", {"next": "/console/mappings"}),
                           ("/console/errors/retry-all", {}), ("/console/full-sync", {"mappings": "CUSTOMER"}),
                           ("/console/subscriptions/refresh", {}), ("/console/mappings/CUSTOMER",
                                                                    {"version": "1", "reconcile_minutes": "5"})):
        assert fetch_status(browser, action, "POST", {"csrf": csrf, **fields}) == 403, action
    assert not mapping_on_hold(console_stack, "CUSTOMER")
    response = console_stack.run(console_stack.stack.admin("mappings/CUSTOMER"))
    assert response.json()["version"] == 1 and response.json()["history"] == []
    full_sync = console_stack.run(console_stack.stack.admin("full-sync", params={"review_lines": "false"}))
    assert full_sync.json().get("run") is None, "a Reader started no full synchronization"
    refused = [e for e in console_stack.stack.api_log_events("console action refused: not an Operator")
               if e.get("user") == READER]
    assert {e.get("path") for e in refused} >= {"/console/mappings/CUSTOMER/hold", "/console/full-sync"}, refused


def test_sign_out_lands_on_the_signed_out_page_and_the_console_needs_a_sign_in_again(
        console_stack: ConsoleStack, browser: WebDriver) -> None:
    base = console_stack.url
    sign_in(browser, base, OPERATOR)
    wait_for(browser, ".cards")
    browser.find_element(By.CSS_SELECTOR, "form.who button[type=submit]").click()
    wait_until(browser, lambda d: d.current_url == f"{base}/console/signed-out", message="the signed-out page")
    assert wait_for(browser, "main h1").text == "Signed out"
    assert not browser.find_elements(By.CSS_SELECTOR, "form.who"), "nobody is shown signed in"
    assert fetch_status(browser, "/console/") == REDIRECTED  # to the sign-in
    browser.get(f"{base}/console/")
    wait_until(browser, lambda d: on_login_page(d, console_stack), message="/console/ → the Entra login page")
    browser.get(f"{base}/console/mappings")
    wait_until(browser, lambda d: on_login_page(d, console_stack), message="/console/mappings → the login page")
