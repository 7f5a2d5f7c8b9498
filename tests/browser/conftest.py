"""Browser tests: Playwright driving Debian's Chromium against a real `pocketcode serve` (one
per test module), whose real Claude CLI talks to the in-process fake model.

Screenshots at phone size (390×844) are saved by the tests that reach each screen, as
artifacts in `test-artifacts/screenshots/` (not tracked). `POCKETCODE_UPDATE_SCREENSHOTS=1`
writes them to docs/screenshots/ instead, so a reviewer can see the app without running it:
do that when the UI changes, and commit the pictures.

Playwright's sync API keeps an event loop running in the test process's main thread while it
is open, and every async test after it on the same worker would fail to start its own: so
Playwright and the browser live for one module, never for the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.browser.stack import PASSWORD, USERNAME, BrowserStack, start_browser_stack

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by `make test`
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A fake microphone that needs no permission prompt (voice input).
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
PHONE = {"width": 390, "height": 844}
ROOT = Path(__file__).resolve().parents[2]
# Playwright's default of 5 s for an assertion: the whole suite runs on two slow vCPUs beside
# these tests (a second test worker, the CLIs, Chromium), where one seen timing out — a queued
# prompt's cancel, then the list redrawn — passed in 16-21 s runs of its own.
expect.set_options(timeout=15_000)
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("POCKETCODE_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "test-artifacts" / "screenshots"
)


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a skipped browser suite would hide a broken set-up
        pytest.skip(message)
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[BrowserStack]:
    """The module's server, its owner account created as a new user does: by opening the
    setup link `serve` printed."""
    started = start_browser_stack(tmp_path_factory.mktemp("browser"))
    try:
        create_owner(browser, started)
    except BaseException:
        started.stop()
        raise
    yield started
    started.stop()


def create_owner(browser: Browser, stack: BrowserStack) -> None:
    context = browser.new_context(viewport=PHONE, base_url=stack.url, color_scheme="dark")
    try:
        page = context.new_page()
        page.goto(f"/#token={stack.setup_token}")
        form = page.get_by_role("form", name="Create the owner account")
        form.get_by_label("Username").fill(USERNAME)
        form.get_by_label("Password").fill(PASSWORD)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "setup.png"), animations="disabled")
        form.get_by_role("button", name="Create account").click()
        page.get_by_role("heading", name="Sessions").wait_for()
        # The token is in no address the browser keeps.
        assert "token" not in page.url
    finally:
        context.close()


@pytest.fixture
def anonymous_page(browser: Browser, stack: BrowserStack) -> Iterator[Page]:
    """A phone-size page with no login, failing the test on any script error."""
    stack.reset_script()
    context = browser.new_context(viewport=PHONE, base_url=stack.url, color_scheme="dark")
    context.grant_permissions(["microphone"], origin=stack.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"script errors in the page: {errors}"


def log_in(context: BrowserContext, stack: BrowserStack) -> None:
    response = context.request.post(
        f"{stack.url}/api/auth/login", data={"username": USERNAME, "password": PASSWORD}
    )
    assert response.ok, response.text()


@pytest.fixture
def page(anonymous_page: Page, stack: BrowserStack) -> Page:
    """A phone-size page logged in as the owner (the cookie set through the API)."""
    log_in(anonymous_page.context, stack)
    return anonymous_page


class Api:
    """The server's API with the page's login, for arranging what a test starts from."""

    def __init__(self, page: Page, stack: BrowserStack) -> None:
        self.request = page.context.request
        self.stack = stack
        # The server refuses cookie-authenticated writes without a same-site Origin.
        self.headers = {"Origin": stack.url}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.request.fetch(
            f"{self.stack.url}{path}", method=method, data=body, headers=self.headers
        )
        assert response.ok, f"{method} {path}: {response.status} {response.text()}"
        return response.json() if response.body() else None

    def new_session(self, *, permission_mode: str = "bypassPermissions", **extra: Any) -> str:
        folder = self.stack.root / f"project-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        body = {"projectPath": str(folder), "permissionMode": permission_mode, **extra}
        session: dict[str, Any] = self.call("POST", "/api/sessions", body)
        return str(session["id"])


@pytest.fixture
def api(page: Page, stack: BrowserStack) -> Api:
    return Api(page, stack)


Screenshot = Callable[[Page, str], None]


@pytest.fixture
def screenshot() -> Screenshot:
    def save(page: Page, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), animations="disabled")

    return save
