"""Times on the page: after a reload the stage chips keep their durations (the job's record
keeps the worker's timings of the stages passed, and when it was created and started), and
relative times ("6 s ago") move on by themselves. In Debian's chromium, against the real
API, worker and Valkey."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, ingest
from tests.support.browser import (  # skips the module without chromium or playwright
    ANSWER_DONE,
    Page,
    Watched,
    ask,
)

pytestmark = pytest.mark.timeout(60)


async def chip_seconds(page: Page, stage: str) -> float:
    """The duration a stage chip shows, in seconds."""
    text = str(await page.text_content(f"[data-stage={stage}] .stage-time"))
    number, unit = re.fullmatch(r"([\d.]+) (m?s)", text).groups()  # type: ignore[union-attr]
    return float(number) / (1000 if unit == "ms" else 1)


async def test_a_reload_keeps_the_stage_durations(stack: Stack, llm: Any, watched: Watched) -> None:
    page = watched.page
    await ingest(stack)
    llm.config.ttft = 4.0  # the answer is generating, silently, for a while
    await page.goto(stack.base_url)
    await ask(page, "How long do I brew green tea?")
    await page.wait_for_selector("[data-stage=generating].active")
    await page.wait_for_function(
        """() => {
            const time = document.querySelector('[data-stage=generating] .stage-time');
            return time && /^[\\d.]+ s$/.test(time.textContent)
                && parseFloat(time.textContent) >= 1.5;
        }""",
        polling=100,
    )
    job_id = re.findall(r"job=([0-9a-f]{32})", page.url)[0]
    # The record has the worker's timings of the stages passed so far.
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        view = (await http.get(f"/jobs/{job_id}")).json()
    assert view["status"] == "in_progress" and view["stage"] == "generating"
    assert "retrieval" in view["timings"], view["timings"]

    await page.reload()
    await page.wait_for_selector("[data-stage=generating].active .stage-time")
    # The generating clock goes on from where it was, not from zero.
    assert await chip_seconds(page, "generating") >= 1.5
    # The stages passed keep their durations: the queue's from the record's times, the
    # retrieval's the worker's own.
    assert await page.is_visible("[data-stage=queued].complete .stage-time")
    retrieval = await chip_seconds(page, "retrieving")
    assert abs(retrieval - view["timings"]["retrieval"]) < 0.01 + view["timings"]["retrieval"] / 10
    await page.wait_for_selector(ANSWER_DONE, timeout=10_000)


async def test_relative_times_move_on_by_themselves(stack: Stack, watched: Watched) -> None:
    page = watched.page
    await ingest(stack)
    await page.clock.install()  # the page's time, moved forward at will
    await page.goto(stack.base_url)
    await ask(page, "How long do I brew green tea?")
    await page.wait_for_selector(ANSWER_DONE)
    when = page.locator("#history .history-time")
    assert await when.text_content() == "just now"
    await page.clock.fast_forward(40_000)
    await page.wait_for_function(
        "() => /^4\\d s ago$/.test(document.querySelector('#history .history-time').textContent)"
    )
    history_link = page.locator("#history a")
    await history_link.focus()
    await page.clock.fast_forward("10:00")
    await page.wait_for_function(
        "() => document.querySelector('#history .history-time').textContent === '11 min ago'"
    )
    # The list was not rebuilt under the reader: the focused link is still the focused one.
    assert await page.evaluate("() => document.activeElement.matches('#history a')")
    assert await when.get_attribute("datetime")
