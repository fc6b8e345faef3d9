"""The web page in a real headless browser: Debian's chromium driven by Playwright (which
downloads no browser of its own), and what the page tests share: a watched page that must not
throw, asking a question, and reading the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ANSWER_DONE = "[data-stage=done].complete"

if not CHROMIUM.exists():
    pytest.skip(
        "no /usr/bin/chromium (apt-get install chromium; .ci/run does)", allow_module_level=True
    )
try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:
    pytest.skip("playwright is not installed (pip install -e '.[test]')", allow_module_level=True)


@asynccontextmanager
async def launched_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page and what it did that a test may want to deny: script errors and dialogs."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        self.event_urls: list[str] = []
        self.requests: list[Any] = []
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", self._on_dialog)
        page.on("request", self._on_request)

    async def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def _on_request(self, request: Any) -> None:
        self.requests.append(request)
        if "/events" in request.url:
            self.event_urls.append(request.url)


@asynccontextmanager
async def open_page(browser: Browser, *, bypass_csp: bool = False) -> AsyncIterator[Watched]:
    """A fresh browser context (its own localStorage) and page; the page must not throw."""
    context = await browser.new_context(
        viewport={"width": 1200, "height": 900}, bypass_csp=bypass_csp
    )
    context.set_default_timeout(15_000)
    watched = Watched(await context.new_page())
    try:
        yield watched
    finally:
        await context.close()
    assert watched.page_errors == [], "the page threw"


async def ask(page: Page, question: str) -> None:
    await page.fill("#question", question)
    await page.press("#question", "Enter")


async def shows_question(page: Page, question: str) -> None:
    script = "(q) => document.getElementById('answer-question').textContent === q"
    await page.wait_for_function(script, arg=question)


async def answer_text(page: Page) -> str:
    return str(await page.text_content("#answer"))


async def grows_to(page: Page, expected: str) -> None:
    """Every state of the answer's text after a reload is a prefix of `expected` (nothing
    repeated or garbled) until it is done, and then it is `expected`."""
    deadline = time.monotonic() + 20
    while not await page.is_visible(ANSWER_DONE):
        text = await answer_text(page)
        assert expected.startswith(text), f"repeated or garbled text after reload: {text!r}"
        assert time.monotonic() < deadline, "the resumed answer never finished"
        await asyncio.sleep(0.05)
    assert await answer_text(page) == expected
