"""Browser tests: Debian's Chromium driven through its ChromeDriver (Selenium), against the real processes.

    def test_errors_page(console_stack: ConsoleStack, browser: WebDriver) -> None:
        sign_in(browser, console_stack.url, OPERATOR)
        browser.get(f"{console_stack.url}/console/errors")
        wait_for(browser, "table#errors")
        screenshot(browser, "errors")

- `browser`: a fresh headless Chromium per test (its own profile, so its own cookies), 1280x900, no implicit
  wait. Chromium and ChromeDriver come from the system (scripts/ensure-browser.sh installs them with apt-get):
  BCSYNC_CHROMIUM and BCSYNC_CHROMEDRIVER override the paths. Missing: the tests are skipped, or fail when CI or
  BCSYNC_REQUIRE_BROWSER is set (.ci/run sets it), so CI cannot pass without running them.
- `console_stack`: the real sandbox, api and one worker (tests/e2e/stack.py) for the whole module, with the
  console's settings; its event loop runs in a thread of its own, so tests stay synchronous and call the
  Stack's async helpers through `console_stack.run(...)`.
- `screenshot(driver, name)`: a full-page PNG, to docs/console/<name>.png with BCSYNC_SCREENSHOTS=1 (`make
  screenshots`), else to pytest's temporary directory (an ordinary run leaves the tree clean).
- `sign_in(driver, base_url, user)`: the Entra sign-in through the sandbox's login page (a user picker).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.stack import Stack

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = ROOT / "docs" / "console"
DEFAULT_CHROMIUM, DEFAULT_CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
NOT_INSTALLED = "chromium not installed: run scripts/ensure-browser.sh"
WINDOW = (1280, 900)

# The sandbox's users on its Entra login page (its user picker), by role.
READER, OPERATOR, NOBODY = "reader@contoso.example", "operator@contoso.example", "nobody@contoso.example"

# As root on a machine without a display, and without reaching for Google: the machine's network is closed, and
# without the background-networking flags Chromium keeps trying (component updates, sync, field trials...).
# Even with them it still looked up clients2.google.com, accounts.google.com and start.duckduckgo.com (seen with
# strace): the resolver rules answer "not found" for every host but the loopback ones, so nothing leaves the
# machine, and a page that needs anything from elsewhere (a CDN) shows it in the tests.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-default-browser-check", "--disable-dev-shm-usage", "--password-store=basic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


def chromium_path() -> str:
    return os.environ.get("BCSYNC_CHROMIUM") or DEFAULT_CHROMIUM


def chromedriver_path() -> str:
    return os.environ.get("BCSYNC_CHROMEDRIVER") or DEFAULT_CHROMEDRIVER


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def browser_required() -> bool:
    """CI (or BCSYNC_REQUIRE_BROWSER) must run the browser tests: a missing Chromium fails them."""
    return _flag("CI") or _flag("BCSYNC_REQUIRE_BROWSER")


def require_chromium() -> None:
    """Skip the test when Chromium or ChromeDriver is missing; fail it instead when a browser is required."""
    missing = [p for p in (chromium_path(), chromedriver_path()) if not os.access(p, os.X_OK)]
    if not missing:
        return
    if browser_required():
        pytest.fail(f"{NOT_INSTALLED} (missing: {', '.join(missing)}; CI or BCSYNC_REQUIRE_BROWSER is set, so "
                    "the browser tests may not be skipped)", pytrace=False)
    pytest.skip(NOT_INSTALLED)


@pytest.fixture(scope="session", autouse=True)
def _chromium_present() -> None:
    """Checked once, before any stack starts (session scope comes first; pytest keeps the skip or failure)."""
    require_chromium()


_screenshot_tmp: Path | None = None


@pytest.fixture(scope="session", autouse=True)
def _screenshot_tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    global _screenshot_tmp
    _screenshot_tmp = tmp_path_factory.mktemp("screenshots")


# ---- the browser --------------------------------------------------------------------------------
def chromium_options(profile: Path) -> Options:
    options = Options()
    options.binary_location = chromium_path()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")  # a fresh profile: no cookies, nothing to sync
    # The sandbox's Entra (the sign-in pages) is HTTPS with a certificate from the sandbox's own self-signed CA
    # (tests/e2e/stack.py's `ca_file`), which Chromium does not trust: accept it, as for a test tenant.
    options.accept_insecure_certs = True
    return options


def start_browser(profile: Path, log: Path | None = None) -> WebDriver:
    """Chromium through the system's ChromeDriver. Giving Service its path keeps Selenium Manager (which would
    download a driver and a browser) out of it; SE_OFFLINE makes sure it could not download anything anyway."""
    os.environ.setdefault("SE_OFFLINE", "true")
    service = Service(chromedriver_path(), log_output=str(log) if log else os.devnull)
    driver = webdriver.Chrome(service=service, options=chromium_options(profile))
    driver.implicitly_wait(0)  # waits are explicit: wait_for
    driver.set_window_size(*WINDOW)
    return driver


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """A fresh headless Chromium (own profile and cookies) for one test; ChromeDriver's log beside the profile."""
    require_chromium()
    directory = tmp_path_factory.mktemp("chromium")
    driver = start_browser(directory / "profile", directory / "chromedriver.log")
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, css: str, timeout: float = 10, *, visible: bool = True) -> WebElement:
    """The first element matching `css` once it is there (and displayed, unless `visible=False`); on timeout an
    AssertionError with the page's address, title and the start of its text."""
    condition = (expected_conditions.visibility_of_element_located if visible
                 else expected_conditions.presence_of_element_located)
    try:
        element: WebElement = WebDriverWait(driver, timeout).until(condition((By.CSS_SELECTOR, css)))
    except TimeoutException:
        text = driver.execute_script("return document.body ? document.body.innerText : ''") or ""
        raise AssertionError(f"{css!r} not {'visible' if visible else 'present'} within {timeout} s on "
                             f"{driver.current_url} ({driver.title!r}):\n{text[:1500]}") from None
    return element


def wait_until(driver: WebDriver, predicate: Callable[[WebDriver], Any], timeout: float = 10,
               message: str = "condition") -> Any:
    """WebDriverWait on any predicate (e.g. `lambda d: "/console" in d.current_url`)."""
    try:
        return WebDriverWait(driver, timeout).until(predicate)
    except TimeoutException:
        raise AssertionError(f"{message} not met within {timeout} s on {driver.current_url}") from None


def screenshot(driver: WebDriver, name: str) -> Path:
    """A full-page PNG of the current page (beyond the viewport, at the window's width): docs/console/<name>.png
    with BCSYNC_SCREENSHOTS=1, else in pytest's temporary directory. Its path."""
    if _flag("BCSYNC_SCREENSHOTS"):
        directory = SCREENSHOT_DIR
    else:
        directory = _screenshot_tmp or Path(tempfile.gettempdir()) / "bcsync-screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    content = metrics.get("cssContentSize") or metrics["contentSize"]
    width = max(int(content["width"]), WINDOW[0])
    height = max(int(content["height"]), 1)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path = directory / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def sign_in(driver: WebDriver, base_url: str, user: str, timeout: float = 15) -> None:
    """Sign in to the console as `user` (READER, OPERATOR or NOBODY): /console/ sends the browser to the sandbox's
    Entra login page, whose user picker has one `<button type="submit" name="user" value="<user>">` per user;
    the click goes through the authorization code flow back to /console."""
    base_url = base_url.rstrip("/")
    driver.get(f"{base_url}/console/")
    button = wait_for(driver, f'button[type="submit"][name="user"][value="{user}"]', timeout)
    assert not driver.current_url.startswith(base_url), \
        f"expected the Entra login page, still on {driver.current_url}"
    button.click()

    def back_on_console(d: WebDriver) -> bool:
        url = urlsplit(d.current_url)
        return d.current_url.startswith(base_url) and url.path.startswith("/console")

    wait_until(driver, back_on_console, timeout, message=f"signed in as {user}, back on {base_url}/console")


# ---- the stack ----------------------------------------------------------------------------------
@dataclass
class ConsoleStack:
    """A running Stack (tests/e2e/stack.py) whose event loop lives in its own thread."""

    stack: Stack
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        """The api's address, where the console is (`{url}/console/`)."""
        return self.stack.api_url

    def run(self, coroutine: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 60) -> T:
        """Run one of the Stack's coroutines on its loop from a synchronous test, e.g.
        `console_stack.run(console_stack.stack.bc.create("customers", {...}))`."""
        async def wrapped() -> T:
            return await coroutine
        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)


@contextlib.contextmanager
def running_stack(directory: Path, start: Callable[[Stack], Awaitable[Any]] = Stack.start,
                  **options: Any) -> Iterator[ConsoleStack]:
    """A Stack(directory, **options) started by `start` (Stack.start: sandbox, api and workers;
    Stack.start_sandbox: the sandbox only) on a loop in a thread of its own; stopped after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="browser-stack", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    async def make() -> Stack:
        return Stack(directory, **options)

    stack = run(make())
    try:
        run(_start(stack, start))
        yield ConsoleStack(stack, loop)
    finally:
        try:
            run(stack.stop())
        finally:
            async def cancel_rest() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            run(cancel_rest(), timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _start(stack: Stack, start: Callable[[Stack], Awaitable[Any]]) -> None:
    try:
        await start(stack)
    except BaseException:
        await stack.stop()
        raise


def console_env() -> dict[str, str]:
    """What the console needs on top of the Stack's settings: its session-signing key (random per stack)."""
    return {"BCSYNC_CONSOLE_SESSION_SECRET": secrets.token_urlsafe(32)}


async def start_console_stack(stack: Stack) -> None:
    """Stack.start with BCSYNC_PUBLIC_URL = the api's own http address (the sign-in's redirect URI is built on
    it). The Stack picks its ports when it is made and already sets it so; set here so that it stays so."""
    stack.env["BCSYNC_PUBLIC_URL"] = stack.api_url
    await stack.start()


@pytest.fixture(scope="module")
def console_stack_env() -> dict[str, str]:
    """More settings for the module's stack (all its processes); override in a test module to add some."""
    return {}


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory, console_stack_env: dict[str, str]
                  ) -> Iterator[ConsoleStack]:
    """The real sandbox, api and one worker for the module's tests, with the console's settings:
    BCSYNC_PUBLIC_URL is the api's own http address, BCSYNC_CONSOLE_SESSION_SECRET a random key. Tests of the module
    share its data: make what a test needs with unique names."""
    require_chromium()
    directory = tmp_path_factory.mktemp("console-stack")
    env = {**console_env(), **console_stack_env}
    with running_stack(directory, start_console_stack, workers=1, env=env) as live:
        yield live
