"""A cited passage on the page: the dialog highlights the sentences the answer quoted and
tells relevance as a rank and a share of the best match, and a `[n]` previews its passage on
hover or focus. In Debian's chromium, against the real API, worker and Valkey, with the
offline answerer (which quotes sentences) and BM25 retrieval (whose raw scores mean nothing
to a reader)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, ingest, make_settings, running_stack
from tests.support.browser import (  # skips the module without chromium or playwright
    ANSWER_DONE,
    Browser,
    Watched,
    answer_text,
    ask,
    open_page,
)

pytestmark = pytest.mark.timeout(60)

OOLONG = """# Oolong

Oolong is a partly oxidised tea from Fujian and Taiwan. Rinse oolong leaves with hot water
before the first steep. The pots used for it are often small and made of clay.

## Steeping

Steep oolong at 90 degrees for three minutes, then steep the same leaves again. Many people
like a second cup better than the first one.
"""

GREEN = """# Green tea

Green tea is steamed or pan-fired soon after picking. Steep green tea at 80 degrees for two
minutes, or it turns bitter.
"""


@pytest.fixture
async def offline(valkey: Any, tmp_path: Path, browser: Browser) -> AsyncIterator[Watched]:
    """The page, over a stack with the offline answerer and two tea documents."""
    settings = make_settings(valkey, tmp_path)
    async with running_stack(settings) as stack, open_page(browser) as watched:
        await ingest(stack, OOLONG, title="Oolong")
        await ingest(stack, GREEN, title="Green tea")
        watched.stack = stack  # type: ignore[attr-defined]
        yield watched


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


async def test_the_dialog_highlights_the_quoted_sentences_and_ranks_relevance(
    offline: Watched,
) -> None:
    page, stack = offline.page, offline.stack  # type: ignore[attr-defined]
    await page.goto(stack.base_url)
    await ask(page, "How long do I steep oolong, and at what degrees?")
    await page.wait_for_selector(ANSWER_DONE)
    answer = await answer_text(page)
    await page.click("#answer button.cite >> nth=0")
    await page.locator("#source-dialog").wait_for(state="visible")

    marks = await page.locator("#source-text mark").all_text_contents()
    assert marks, "nothing highlighted"
    for mark in marks:
        assert words(mark) in words(answer), (mark, answer)
    # What the answer did not quote stays plain.
    plain = await page.evaluate(
        """() => [...document.querySelectorAll('#source-text p')]
            .flatMap((p) => [...p.childNodes])
            .filter((node) => node.nodeType === Node.TEXT_NODE).map((node) => node.data)"""
    )
    assert any("like a second cup better" in text for text in plain), plain
    assert await page.is_visible("#source-quoted")

    meta = str(await page.text_content("#source-meta"))
    assert re.search(r"ranked 1 of [23] · 100% of the best match", meta), meta
    assert not re.search(r"\d\.\d", meta), f"a raw score: {meta}"
    await page.click("#source-close")
    # The other source: a lower rank, a smaller share.
    await page.click("#sources li:nth-child(2) button")
    meta = str(await page.text_content("#source-meta"))
    share = re.search(r"ranked 2 of [23] · (\d+)% of the best match", meta)
    assert share and 0 < int(share[1]) < 100, meta


async def test_a_citation_previews_its_passage_on_hover_and_focus(offline: Watched) -> None:
    page, stack = offline.page, offline.stack  # type: ignore[attr-defined]
    await page.goto(stack.base_url)
    await ask(page, "How long do I steep oolong?")
    await page.wait_for_selector(ANSWER_DONE)
    preview = page.locator("#cite-preview")
    assert await preview.is_hidden()

    cite = page.locator("#answer button.cite").first
    await cite.hover()
    await preview.wait_for(state="visible")
    number = str(await cite.text_content()).strip("[]")
    assert str(await page.text_content("#cite-preview-title")).startswith(f"[{number}] Oolong")
    text = str(await page.text_content("#cite-preview-text"))
    # The passage's words, its heading left out (the title line says where it sits).
    assert text.startswith(("Oolong is a partly", "Steep oolong at 90")), text
    assert "#" not in text and "\n" not in text
    assert len(text) <= 221
    # It sits by the button, inside the window.
    box, place = await preview.bounding_box(), await cite.bounding_box()
    assert box and place and abs(box["y"] - (place["y"] + place["height"])) < 20
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1200

    await page.mouse.move(5, 5)
    await preview.wait_for(state="hidden")
    await cite.focus()  # from the keyboard too
    await preview.wait_for(state="visible")
    await page.keyboard.press("Escape")
    await preview.wait_for(state="hidden")
    # Opening the passage puts the preview away.
    await cite.hover()
    await preview.wait_for(state="visible")
    await cite.click()
    await preview.wait_for(state="hidden")


async def test_no_citation_no_highlight(stack: Stack, browser: Browser) -> None:
    """An answer that quotes nothing (the test LLM's filler words) highlights nothing."""
    await ingest(stack, OOLONG, title="Oolong")
    async with open_page(browser) as watched:
        page = watched.page
        await page.goto(stack.base_url)
        await ask(page, "How long do I steep oolong?")
        await page.wait_for_selector(ANSWER_DONE)
        await page.click("#answer button.cite")
        await page.locator("#source-dialog").wait_for(state="visible")
        assert await page.locator("#source-text mark").count() == 0
        assert await page.is_hidden("#source-quoted")


@pytest.mark.parametrize(
    ("width", "close"), [(375, "tap the ×"), (1200, "press Escape")], ids=["phone", "desktop"]
)
async def test_the_preview_closes_with_the_dialog(offline: Watched, width: int, close: str) -> None:
    page, stack = offline.page, offline.stack  # type: ignore[attr-defined]
    await page.set_viewport_size({"width": width, "height": 800})
    await page.goto(stack.base_url)
    await ask(page, "How long do I steep oolong, and at what degrees?")
    await page.wait_for_selector(ANSWER_DONE)
    await page.click("#answer button.cite >> nth=0")
    await page.locator("#source-dialog").wait_for(state="visible")
    if close == "tap the ×":
        await page.click("#source-close")
    else:
        await page.keyboard.press("Escape")
    await page.locator("#source-dialog").wait_for(state="hidden")
    await page.wait_for_timeout(300)  # whatever the focus given back would show, shows by now
    assert await page.is_hidden("#cite-preview")
