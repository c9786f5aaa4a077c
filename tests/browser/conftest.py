"""Browser fixtures: Debian's chromium driven by Playwright (sync API), a live sidecar per test, screenshots.

The browser is started once for this package's tests from ``/usr/bin/chromium`` (``.ci/run`` installs it
with apt; Playwright's own browser downloads are never used) and closed after the last one. Each test gets
fresh browser contexts (cookies, storage: one per person) at 1280 px wide, in English, and a fresh site
(``LiveSidecar``: sandboxes, web app, SQLite file).

Every page a test opens is watched: a JavaScript dialog (an XSS that ran), an uncaught script error, a
console error (how chromium reports a Content-Security-Policy violation, e.g. an inline style) or a
missing stylesheet, script or image fails the test. ``shot(page, name)`` also checks that every control
has a label and no id is used twice, then writes ``docs/screenshots/<name>.png`` (full page), replacing
the previous run's picture. ``tab_to(page, locator)`` reaches a control with the Tab key only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from sidecar.config import ROOT

from .site import ADMIN, PASSWORD, LiveSidecar

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server"]  # loopback only: a proxy from the environment must not see the sandboxes
SCREENSHOTS = ROOT / "docs" / "screenshots"  # the README shows these
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 20_000  # one page action; the slowest (a first sync behind a click) takes a few seconds


@pytest.fixture(scope="package")
def browser():
    """One headless chromium for the browser tests (this package), closed cleanly after the last one."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium; .ci/run does it)")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    except Exception:
        playwright.stop()
        raise
    yield chromium
    chromium.close()
    playwright.stop()


class Watch:
    """What went wrong in a page that a person would not see: dialogs, script errors, console errors."""

    def __init__(self):
        self.dialogs: list[str] = []
        self.errors: list[str] = []

    def attach(self, page) -> None:
        def on_dialog(dialog):
            self.dialogs.append(f"{dialog.type}: {dialog.message} on {page.url}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda exc: self.errors.append(f"script error on {page.url}: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console {msg.type} on {page.url}: {msg.text}")
                if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
        # A missing stylesheet, script or image (the page itself may be a deliberate 403 or 404).
        page.on("response", lambda response: self.errors.append(
            f"{response.status} for {response.request.resource_type} {response.url} on {page.url}")
            if response.status >= 400 and response.request.resource_type != "document" else None)
        page.on("requestfailed", lambda request: self.errors.append(
            f"request failed: {request.resource_type} {request.url} ({request.failure})"))

    def check(self) -> None:
        assert not self.dialogs, f"a dialog opened (script from page data ran): {self.dialogs}"
        assert not self.errors, "\n".join(self.errors)


@pytest.fixture
def watch():
    return Watch()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets ``new_page`` know whether the test failed, to say where each page was.
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.browser_test_failed = report.failed


@pytest.fixture
def new_page(browser, watch, request, tmp_path):
    """``new_page(viewport=WIDE) -> Page`` in its own browser context (its own cookies: another person).

    When the test fails, each open page's address and a screenshot (in the test's tmp_path) are printed."""
    contexts = []

    def make(viewport=WIDE):
        context = browser.new_context(viewport=viewport, locale="en-US", device_scale_factor=1,
                                      is_mobile=viewport["width"] < 600, has_touch=viewport["width"] < 600)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        watch.attach(page)
        return page

    yield make
    if getattr(request.node, "browser_test_failed", False):
        for n, context in enumerate(contexts):
            for m, opened in enumerate(context.pages):
                picture = tmp_path / f"failed-{n}-{m}.png"
                opened.screenshot(path=str(picture), full_page=True)
                print(f"page {n}.{m} at {opened.url}: {picture}")
    for context in contexts:
        context.close()
    watch.check()


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def site(tmp_path):
    """A configured sidecar (Google client and KiviCare site set) with the admin account, no doctor connected."""
    live = LiveSidecar(tmp_path)
    live.create_admin()
    yield live
    live.stop()


@pytest.fixture
def fresh_site(tmp_path):
    """A sidecar as first installed: no admin, no Google client, no KiviCare site."""
    live = LiveSidecar(tmp_path, configured=False)
    yield live
    live.stop()


# ---- helpers a test uses as a person uses the pages ---------------------------------------------

def sign_in(page, site, username: str = ADMIN, password: str = PASSWORD) -> None:
    page.goto(site.url + "/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def tab_to(page, target, limit: int = 80) -> None:
    """Press Tab from the top of the page until ``target`` (a Locator) has the focus, as a keyboard user
    would; fails when it is not reachable within ``limit`` presses. The first stop is the skip link."""
    page.locator("body").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content", "no skip link first"
    for _ in range(limit):
        if target.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{target} cannot be reached with the keyboard on {page.url}")


_UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter(el => el.type !== 'hidden')
  .filter(el => {
    const named = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
      || (el.labels && el.labels.length > 0) || el.getAttribute('title');
    const text = (el.tagName === 'BUTTON') && el.textContent.trim();
    return !(named || text);
  })
  .map(el => el.outerHTML.slice(0, 160))"""


_DUPLICATE_IDS = """() => {
  const seen = {};
  document.querySelectorAll('[id]').forEach(el => { seen[el.id] = (seen[el.id] || 0) + 1; });
  return Object.keys(seen).filter(id => seen[id] > 1);
}"""


def assert_labelled(page) -> None:
    """Every visible form control has a label (or an ARIA name); every button says what it does; no id is
    used twice (a second ``<label for>`` would name, and click, the first element with that id)."""
    duplicates = page.evaluate(_DUPLICATE_IDS)
    assert not duplicates, f"ids used more than once on {page.url}: {duplicates}"
    unlabelled = page.evaluate(_UNLABELLED)
    assert not unlabelled, f"controls without a label on {page.url}: {unlabelled}"


def shot(page, name: str, watch: Watch | None = None) -> Path:
    """Check the page (labels; no dialog or console error so far), then save a full-page screenshot."""
    page.wait_for_load_state("load")
    assert_labelled(page)
    if watch is not None:
        watch.check()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # From the top, so a sticky header is drawn there and not where an anchor (#section) had scrolled.
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path
