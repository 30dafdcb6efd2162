"""A real headless browser for tests: Debian's chromium driven by Playwright for Python.

``browser_page`` (a pytest fixture; tests/conftest.py loads this module as a
plugin, so any test can ask for it) yields a
Playwright ``Page``; a test that needs a browser is skipped, with the reason,
only when chromium or playwright is missing (`.ci/run` installs both, so CI
never skips). Playwright's own browser download is never used: the machine
has Debian's chromium at ``CHROMIUM``.

    def test_page(browser_page):
        browser_page.goto(url)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "browser_page", "chromium_path", "launch"]

CHROMIUM = "/usr/bin/chromium"
#: No network but the page's own: nothing phones home, nothing updates itself.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """The chromium executable ($ORCH_TEST_CHROMIUM, /usr/bin/chromium, or on PATH), or None."""
    for candidate in (os.environ.get("ORCH_TEST_CHROMIUM"), CHROMIUM, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def launch(playwright: Any) -> Any:
    """A headless chromium Browser from a started ``sync_playwright()``."""
    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    return playwright.chromium.launch(
        executable_path=path, headless=True, args=list(CHROMIUM_FLAGS)
    )


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A fresh page in a fresh headless chromium, closed after the test."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
            context.close()
        finally:
            browser.close()
