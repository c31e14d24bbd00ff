"""Headless Chromium for the browser tests, driven by Playwright's sync API.

The fixtures are registered once, in tests/conftest.py, so every browser test in any folder
shares one Playwright instance (two sync instances in one process refuse to start).

Playwright's sync API runs an asyncio event loop in the test thread; Django's ORM then refuses
to run ("you cannot call this from an async context") unless told it is safe, which it is here:
the loop only talks to the browser.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings

from tests.support import require_service

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# Debian's chromium; Playwright's own browser downloads are not used.
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots"

# Records Content-Security-Policy violations in the page, where the test can read them.
_CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


@pytest.fixture(scope="session")
def browser():
    require_service(Path(CHROMIUM).exists(), f"headless Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        require_service(False, "the playwright Python package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """Console errors, uncaught exceptions and failed same-origin requests seen by a page."""

    def __init__(self, page, origin: str):
        self.page = page
        self.errors: list[str] = []
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console.{message.type}: {message.text}")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on(
            "response",
            lambda response: (
                self.errors.append(f"HTTP {response.status}: {response.url}")
                if response.url.startswith(origin) and response.status >= 400
                else None
            ),
        )

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("() => window.__cspViolations || []")

    def assert_clean(self, where: str) -> None:
        problems = self.errors + [f"CSP: {v}" for v in self.csp_violations()]
        assert not problems, f"{where}: {problems}"


@pytest.fixture
def console_page(browser, live_server):
    """A fresh 1440×900 page on the live server, recording everything that went wrong."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_server.url)
    context.add_init_script(_CSP_LISTENER)
    page = context.new_page()
    problems = PageProblems(page, live_server.url)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    try:
        yield page, problems
    finally:
        context.close()
