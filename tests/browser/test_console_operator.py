"""An Operator at work in the console, in Chromium, against the real sandbox, api and worker (one stack for the
module; the tests run in file order and the last ones see what the first ones made):

- an order refused because its item is blocked in BC: the item unblocked in BC, Retry on the errors page, and
  the error resolves (the order reaches BC);
- a record found by its name on the records page, and its history timeline with the fields' values;
- a mapping put on hold and resumed from the mappings page (its badge follows), changed while on hold (the
  version diff);
- a full synchronization started from its page, its progress refreshing by itself until it has finished;
- the subscriptions refreshed; the setup check; the overview;
- no page wider than a 1280 px window, or than a phone (390 px) but for its tables' own scroll boxes.

Each step takes its page's screenshot (docs/console/<page>.png with BCSYNC_SCREENSHOTS=1).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from schemas.mappings import MAPPINGS
from tests.browser.conftest import OPERATOR, ConsoleStack, screenshot, sign_in, wait_for, wait_until
from tests.browser.test_console_access import (
    TIMEOUT,
    BlockedOrder,
    action_controls,
    blocked_item_order,
    first,
    main_text,
    mapping_on_hold,
    new_tag,
)
from tests.e2e.stack import Stack

Json = dict[str, Any]


@pytest.fixture(scope="module")
def console_stack_env() -> dict[str, str]:
    # Quick enough for a test: the workers look for full-synchronization work twice a second.
    return {"BCSYNC_JOBS_POLL_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def setup_done(console_stack: ConsoleStack) -> Json:
    """`bcsync setup`: the BC subscriptions and the Dataverse webhook, so that changes travel as in production."""
    return console_stack.run(console_stack.stack.register_webhooks(), timeout=120)


@pytest.fixture
def operator(console_stack: ConsoleStack, browser: WebDriver, setup_done: Json) -> WebDriver:
    """The browser, signed in as an Operator (on the overview)."""
    sign_in(browser, console_stack.url, OPERATOR)
    wait_for(browser, ".cards")
    assert wait_for(browser, "header .role").text == "Operator"
    return browser


def notice(driver: WebDriver, contains: str, timeout: float = 15) -> str:
    """The text of the page's notice (shown once after an action) that contains `contains`."""
    def found(d: WebDriver) -> str | None:
        texts = [n.text for n in d.find_elements(By.CSS_SELECTOR, "main .notice")]
        return next((t for t in texts if contains in t), None)

    return str(wait_until(driver, found, timeout, message=f"a notice with {contains!r}"))


def click_and_wait_for_new_page(driver: WebDriver, button: WebElement, timeout: float = 20) -> None:
    """Click a form's button (or a link) and wait until the browser shows the page it led to, loaded."""
    driver.execute_script("window.bcsyncOldPage = true")
    button.click()

    def arrived(d: WebDriver) -> bool:
        try:
            return bool(d.execute_script("return !window.bcsyncOldPage && document.readyState === 'complete'"))
        except WebDriverException:  # between two pages
            return False

    wait_until(driver, arrived, timeout, message="the page after the click")


def button(driver: WebDriver, scope: str, label: str) -> WebElement:
    """The button labelled `label` in the element matching `scope`."""
    container = wait_for(driver, scope)
    found = [b for b in container.find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == label]
    assert found, f"no button {label!r} in {scope}: {[b.text for b in container.find_elements(By.TAG_NAME, 'button')]}"
    return found[0]


def row_badges(driver: WebDriver, css: str) -> list[str]:
    return [b.text for b in wait_for(driver, css).find_elements(By.CSS_SELECTOR, ".badge")]


async def error_state(stack: Stack, error_id: int) -> str | None:
    for state in ("open", "skipped", "resolved", "dismissed"):
        response = await stack.admin("errors", params={"mapping": "SALESORDER-ORDER", "state": state, "limit": 1000})
        if any(e["id"] == error_id for e in response.json()):
            return state
    return None


# ---- errors: retry an error caused by a blocked item -----------------------------------------------------------
def test_an_error_from_a_blocked_item_is_retried_after_unblocking_and_resolves(
        console_stack: ConsoleStack, operator: WebDriver) -> None:
    stack, base = console_stack.stack, console_stack.url
    blocked: BlockedOrder = console_stack.run(blocked_item_order(stack, new_tag()), timeout=120)
    error_id = blocked.error["id"]

    operator.get(f"{base}/console/errors")
    row = wait_for(operator, f"tr#error-{error_id}")
    assert "SALESORDER-ORDER" in row.text and f"Bike lock {blocked.tag}" in row.text and "blocked" in row.text
    assert row_badges(operator, f"tr#error-{error_id}")[0] in ("open", "skipped")
    assert {"button 'Retry'", "button 'Dismiss'", "button 'Retry all'"} <= set(action_controls(operator))
    history = row.find_element(By.CSS_SELECTOR, "td.errors-id a")  # the record's history, one click away
    assert (history.get_attribute("href") or "").endswith(f"/console/records/SALESORDER-ORDER/dataverse/{blocked.order}")
    screenshot(operator, "errors")

    # Fixed where it is wrong (in BC), then retried here.
    console_stack.run(stack.bc.patch("items", blocked.item["id"], {"blocked": False}))
    click_and_wait_for_new_page(operator, button(operator, f"tr#error-{error_id}", "Retry"))
    assert f"Retried error {error_id} (SALESORDER-ORDER, dataverse" in notice(operator, "Retried error")

    def gone(d: WebDriver) -> bool:  # the default list ("All (not resolved)") drops it once it resolved
        d.refresh()
        wait_for(d, "main table")
        return not d.find_elements(By.CSS_SELECTOR, f"tr#error-{error_id}")

    wait_until(operator, gone, TIMEOUT, message=f"error {error_id} gone from the open list")
    assert console_stack.run(error_state(stack, error_id)) == "resolved"
    order = console_stack.run(first(stack, lambda: stack.bc.query(
        "salesOrders", f"externalDocumentNumber eq 'PO-{blocked.tag}'"), "the order in BC"))
    lines = console_stack.run(stack.bc.query("salesOrderLines", f"documentId eq {order['id']}"))
    assert [(x["itemId"], x["quantity"]) for x in lines] == [(blocked.item["id"], 3)], lines

    operator.get(f"{base}/console/errors?state=resolved&mapping=SALESORDER-ORDER")
    assert row_badges(operator, f"tr#error-{error_id}")[0] == "resolved"


# ---- records: search and history --------------------------------------------------------------------------------
def test_a_record_is_found_by_name_and_its_history_shows_the_fields(console_stack: ConsoleStack,
                                                                     operator: WebDriver) -> None:
    stack, base = console_stack.stack, console_stack.url
    name = f"Northwind Bikes {new_tag()}"

    async def make() -> Json:
        account = await stack.dv.create("accounts", {"name": name, "customertypecode": 3,
                                                     "telephone1": "+1 425 555 0100"})
        customer = await first(stack, lambda: stack.bc.query("customers", f"displayName eq '{name}'"),
                               "the customer in BC")
        await stack.dv.update("accounts", account, {"telephone1": "+1 425 555 0199"})

        async def updated() -> bool:
            return (await stack.bc.get("customers", customer["id"]))["phoneNumber"] == "+1 425 555 0199"

        await stack.wait_until(updated, timeout=TIMEOUT, interval=0.2, message="the new phone number in BC")
        return customer

    customer = console_stack.run(make(), timeout=120)

    operator.get(f"{base}/console/records")
    search = wait_for(operator, "input#q")
    search.send_keys(name.split()[-1])  # part of the name: its unique tag
    click_and_wait_for_new_page(operator, button(operator, "form.filters", "Search"))
    rows = operator.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    # The customer's pair; its company contact in BC may be listed too (CONTACT: filtered, not a person).
    hits = [r for r in rows if name in r.text and r.find_elements(By.TAG_NAME, "td")[1].text == "CUSTOMER"]
    assert len(hits) == 1 and customer["id"] in hits[0].text, [r.text for r in rows]
    assert hits[0].find_elements(By.TAG_NAME, "td")[-1].text == "yes"  # coupled
    screenshot(operator, "records")

    click_and_wait_for_new_page(operator, hits[0].find_element(By.CSS_SELECTOR, "a"))
    heading = wait_for(operator, "main h1").text
    assert heading.startswith("CUSTOMER · ") and name in heading, heading
    entries = operator.find_elements(By.CSS_SELECTOR, "ol.timeline > li")
    assert len(entries) >= 2, [e.text for e in entries]
    decisions = [e.find_element(By.CSS_SELECTOR, ".badge").text for e in entries]
    assert {"created", "applied"} <= set(decisions), decisions
    text = main_text(operator)
    for shown in (name, "+1 425 555 0100", "+1 425 555 0199", "displayName", "phoneNumber", customer["id"]):
        assert shown in text, f"{shown!r} not on the record's page"
    assert "coupled" in operator.find_element(By.CSS_SELECTOR, "section[aria-labelledby=pair]").text
    screenshot(operator, "record")


# ---- mappings: hold, change, resume -------------------------------------------------------------------------------
def test_a_mapping_is_held_changed_and_resumed_from_the_mappings_pages(console_stack: ConsoleStack,
                                                                       operator: WebDriver) -> None:
    base, name = console_stack.url, "CONTACT"
    operator.get(f"{base}/console/mappings")
    assert "running" in row_badges(operator, f"tr#mapping-{name}")
    click_and_wait_for_new_page(operator, button(operator, f"tr#mapping-{name}", "Hold"))
    assert f"{name} is on hold" in notice(operator, "on hold")
    assert "on hold" in row_badges(operator, f"tr#mapping-{name}")
    assert "running" in row_badges(operator, "tr#mapping-CUSTOMER")
    assert mapping_on_hold(console_stack, name)

    # Held, it can be changed: its page has the form; saving shows the new version's diff.
    operator.find_element(By.CSS_SELECTOR, f"tr#mapping-{name} th a").click()
    minutes = wait_for(operator, "input#c-reconcile_minutes")
    minutes.clear()
    minutes.send_keys("45")
    click_and_wait_for_new_page(operator, button(operator, "form.mapping-form", "Save change"))
    assert "now version 2" in notice(operator, "changed (reconcile_minutes)")
    diff = wait_for(operator, "section.mapping-diff")
    assert "Version 2 against version 1" in diff.text
    [line] = [r.text for r in diff.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert line.split() == ["reconcile_minutes", "added", "—", "45"], line
    screenshot(operator, "mapping")

    operator.get(f"{base}/console/mappings")
    assert "on hold" in row_badges(operator, f"tr#mapping-{name}")
    screenshot(operator, "mappings")
    click_and_wait_for_new_page(operator, button(operator, f"tr#mapping-{name}", "Resume"))
    assert f"{name} resumed" in notice(operator, "resumed")
    assert "running" in row_badges(operator, f"tr#mapping-{name}")
    button(operator, f"tr#mapping-{name}", "Hold")  # and Hold is offered again
    assert not mapping_on_hold(console_stack, name)


# ---- full synchronization: start, live progress -----------------------------------------------------------------
def test_a_full_sync_is_started_and_its_progress_refreshes_by_itself(console_stack: ConsoleStack,
                                                                    operator: WebDriver) -> None:
    stack, base = console_stack.stack, console_stack.url

    async def customers_to_synchronize() -> None:
        # Customers that were in BC before the integration (the seed notifies nothing), with unique names (the
        # seed repeats some): their renaming is not notified either, so Sales has none of them yet.
        await stack.bc.seed(customers=40, items=0, salespeople=0, contactsPerCustomer=0)
        rows = await stack.bc.query("customers", top=10_000)
        await stack.bc.faults(drop_webhooks=True)
        await asyncio.gather(*(stack.bc.patch("customers", c["id"], {"displayName": f"{c['displayName']} {c['number']}"})
                               for c in rows if c["number"] not in c["displayName"]))
        await stack.bc.flush()
        await stack.bc.faults(drop_webhooks=False)
        await stack.dv.faults(latency_ms=30)  # a run of a few seconds, long enough to watch

    console_stack.run(customers_to_synchronize(), timeout=120)
    try:
        operator.get(f"{base}/console/full-sync")
        wait_for(operator, "table#review", 30)
        assert "No full synchronization has run yet." in wait_for(operator, "#run-lines").text
        for box in operator.find_elements(By.CSS_SELECTOR, "input[name=mappings]"):
            if box.is_selected() != (box.get_attribute("value") in ("CURRENCY", "CUSTOMER")):
                box.click()
        click_and_wait_for_new_page(operator, button(operator, "form#start-form", "Start full synchronization"))
        assert "started: CURRENCY, CUSTOMER" in notice(operator, "Full synchronization")
        lines = wait_for(operator, "#run-lines")
        assert lines.get_attribute("data-live") == "true", "the run should still be in progress"
        assert "In progress" in lines.text and "updates every 2 seconds" in lines.text
        operator.execute_script("window.bcsyncNotReloaded = true")

        def finished(d: WebDriver) -> bool:  # read in one script: console.js may replace the section meanwhile
            return bool(d.execute_script("""const section = document.getElementById("run-lines");
                return section.dataset.live === "false" && section.innerText.includes("Finished");"""))

        wait_until(operator, finished, 90, message="the run shown Finished without a reload")
        assert operator.execute_script("return window.bcsyncNotReloaded === true"), "the page was reloaded"
        states = {r.get_attribute("data-mapping"): r.get_attribute("data-state")
                  for r in operator.find_elements(By.CSS_SELECTOR, "#lines tbody tr")}
        assert states == {"CURRENCY": "finished", "CUSTOMER": "finished"}, states
        customer_line = operator.find_element(By.CSS_SELECTOR, "#lines tr[data-mapping=CUSTOMER]").text
        assert "Finished" in customer_line and "inserted" in customer_line, customer_line
        assert "updates every 2 seconds" not in operator.find_element(By.ID, "run-lines").text
        screenshot(operator, "full-sync")
    finally:
        console_stack.run(stack.dv.clear_faults())
    run = console_stack.run(stack.admin("full-sync", params={"review_lines": "false"})).json()["run"]
    assert run["status"] == "finished" and [x["mapping"] for x in run["lines"]] == ["CURRENCY", "CUSTOMER"]


# ---- subscriptions, setup check, overview -------------------------------------------------------------------------
def test_subscriptions_are_refreshed_and_the_setup_check_and_overview_show_every_mapping(
        console_stack: ConsoleStack, operator: WebDriver) -> None:
    base = console_stack.url
    operator.get(f"{base}/console/subscriptions")
    click_and_wait_for_new_page(operator, button(operator, "main", "Refresh now"))
    assert notice(operator, "Refreshed").startswith("Refreshed: ")
    subscriptions = wait_for(operator, "table#bc-subscriptions")
    assert "customers" in subscriptions.text and "expired" not in subscriptions.text
    assert wait_for(operator, "table#dataverse-registration").text
    screenshot(operator, "subscriptions")

    operator.get(f"{base}/console/setup-check")
    wait_for(operator, "table#check", 30)
    checked = [r.get_attribute("data-mapping") for r in operator.find_elements(By.CSS_SELECTOR, "#check tbody tr")]
    assert checked == [m.name for m in MAPPINGS], checked
    assert operator.find_elements(By.CSS_SELECTOR, "#all-good, #warnings-only"), main_text(operator)[:500]
    screenshot(operator, "setup-check")

    # The overview's last hour is computed at most every 15 s (a stale one is shown meanwhile): the charts show
    # this module's work once it has been computed again.
    def charted(d: WebDriver) -> bool:
        d.get(f"{base}/console/")
        card = wait_for(d, "section[aria-labelledby=m-CUSTOMER]")
        if card.find_elements(By.CSS_SELECTOR, "svg.chart rect"):
            return True
        time.sleep(1)
        return False

    wait_until(operator, charted, 40, message="the CUSTOMER card's chart")
    cards = wait_for(operator, ".cards").find_elements(By.CSS_SELECTOR, "section.card")
    assert [c.find_element(By.TAG_NAME, "h2").text for c in cards] == [m.name for m in MAPPINGS]
    customer = operator.find_element(By.CSS_SELECTOR, "section[aria-labelledby=m-CUSTOMER]").text
    assert "running" in customer and "0 runs" not in customer, customer
    screenshot(operator, "overview")



# ---- layout: nothing wider than the window, on a desktop or a phone ---------------------------------------------
LAYOUT_PAGES = ("/console/", "/console/errors?state=resolved", "/console/records?q=Northwind", "/console/mappings",
                "/console/mappings/CONTACT?diff=2", "/console/full-sync",
                "/console/subscriptions", "/console/setup-check")


def test_no_page_is_wider_than_a_desktop_window_or_a_phone(console_stack: ConsoleStack, operator: WebDriver) -> None:
    """At 1280 px no page and no table scrolls sideways; at 390 px (a phone) only tables do, inside their box.
    CONTACT is on hold meanwhile: its page has the change form."""
    stack = console_stack.stack
    assert console_stack.run(stack.admin("mappings/CONTACT/hold", "POST")).status_code == 200
    try:
        wide = too_wide(console_stack, operator)
    finally:
        assert console_stack.run(stack.admin("mappings/CONTACT/resume", "POST")).status_code == 200
    assert not wide, wide


def too_wide(console_stack: ConsoleStack, operator: WebDriver) -> dict[str, Any]:
    wide: dict[str, Any] = {}
    for width in (1280, 390):
        operator.set_window_size(width, 900)
        for path in LAYOUT_PAGES:
            operator.get(console_stack.url + path)
            wait_for(operator, "footer")
            found = operator.execute_script("""
                const page = document.documentElement, out = [];
                if (page.scrollWidth > page.clientWidth) {
                    const over = [...document.querySelectorAll("main *")].filter((e) => !e.closest(".table-wrap")
                        && e.getBoundingClientRect().right > page.clientWidth).map((e) => e.tagName + "." + e.className);
                    out.push(`page ${page.scrollWidth} > ${page.clientWidth}: ${over.slice(0, 5).join(", ")}`);
                }
                if (arguments[0]) document.querySelectorAll(".table-wrap").forEach((box) => {
                    if (box.scrollWidth > box.clientWidth) {
                        const table = box.querySelector("table");
                        out.push(`table ${table.id || table.querySelector("th").innerText} ${box.scrollWidth} > ${box.clientWidth}`);
                    }});
                return out;""", width >= 1280)
            if found:
                wide[f"{width} px {path}"] = found
    return wide
