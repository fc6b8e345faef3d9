"""Take docs/screenshot.png and docs/screenshot-phone.png: the web page holding a conversation
about the demo corpus (a question, then a follow-up under its answer), at desktop and phone
widths.

Runs everything in one process, as the tests do: an embedded Valkey, the API, a worker with
the offline providers, and Debian's chromium driven by Playwright.

    .venv/bin/python docs/make_screenshot.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for the test fixtures' helpers

from rag_async.local.demo_corpus import DEMO_QUESTION, demo_documents  # noqa: E402
from rag_async.local.valkey import EmbeddedValkey  # noqa: E402
from tests.conftest import make_settings, running_stack  # noqa: E402
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.support.documents import add_document  # noqa: E402

FOLLOW_UP = "And how do I raise one of my own?"
SHOTS = {
    "screenshot.png": {"width": 1280, "height": 860},
    "screenshot-phone.png": {"width": 390, "height": 844},
}


async def converse(page: Page, base_url: str) -> None:
    """A question, then a follow-up in the same conversation, both answered."""
    await page.goto(base_url)
    for question in (DEMO_QUESTION, FOLLOW_UP):
        await page.fill("#question", question)
        await page.press("#question", "Enter")
        await page.wait_for_function(
            "(q) => document.getElementById('answer-question').textContent === q", arg=question
        )
        await page.wait_for_selector("[data-stage=done].complete")
    await page.wait_for_selector("#thread .turn .answer p")
    # The service panel's summary has heard from the worker.
    await page.wait_for_function(
        "() => /worker/.test(document.getElementById('service-note').textContent)"
    )
    await page.mouse.move(0, 0)


async def main(output: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        valkey = EmbeddedValkey(Path(folder), appendonly=False)
        valkey.start()
        try:
            settings = make_settings(valkey, Path(folder) / "data")  # the offline providers
            async with running_stack(settings) as stack, async_playwright() as playwright:
                for title, source, text in demo_documents():
                    accepted = await add_document(stack.client, text, title=title, source=source)
                    _ = [event async for event in stack.client.follow(accepted["job_id"])]
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                for name, viewport in SHOTS.items():
                    page = await browser.new_page(viewport=viewport)
                    await converse(page, stack.base_url)
                    await page.screenshot(path=str(output / name), full_page=True)
                    await page.close()
                await browser.close()
        finally:
            valkey.stop()


if __name__ == "__main__":
    asyncio.run(main(REPO / "docs"))
    print("wrote docs/" + " and docs/".join(SHOTS))
