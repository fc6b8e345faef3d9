"""A conversation on the page: a follow-up stays under the earlier answer and is asked within
the same conversation (the API holds both turns), "New conversation" starts afresh, a reload
brings the thread back; Stop cancels a streaming answer; an answer can be copied; dark mode
follows the system. In Debian's chromium, against the real API, worker and Valkey."""

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
    answer_text,
    ask,
    shows_question,
)
from tests.support.openai_server import expected_answer

pytestmark = pytest.mark.timeout(90)


def job_of(page: Page) -> str:
    return re.findall(r"job=([0-9a-f]{32})", page.url)[0]


async def latest_conversation(page: Page) -> str:
    """The id of the conversation this browser used last (web/memory.js)."""
    script = "() => JSON.parse(localStorage.getItem('rag-async:conversations'))[0].id"
    return str(await page.evaluate(script))


async def thread_questions(page: Page) -> list[str]:
    return await page.eval_on_selector_all(
        "#thread .question", "(nodes) => nodes.map((node) => node.textContent)"
    )


async def test_a_follow_up_stays_in_one_thread(stack: Stack, watched: Watched) -> None:
    page = watched.page
    await ingest(stack)
    await page.goto(stack.base_url)
    await ask(page, "How long do I brew green tea?")
    await page.wait_for_selector(ANSWER_DONE)
    first_job = job_of(page)
    assert await page.input_value("#question") == ""  # the input clears once it is sent

    await ask(page, "And black tea?")
    await shows_question(page, "And black tea?")
    await page.wait_for_selector(ANSWER_DONE)
    second_job = job_of(page)
    # The first question and its answer stay on screen above the follow-up's.
    await page.wait_for_selector("#thread .turn")
    assert await thread_questions(page) == ["How long do I brew green tea?"]
    assert await page.text_content("#thread .answer") == expected_answer(12)
    assert await answer_text(page) == expected_answer(12)

    # The follow-up was asked within the first question's conversation: it holds both turns.
    conversation_id = await latest_conversation(page)
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        conversation = (await http.get(f"/conversations/{conversation_id}")).json()
    assert [turn["job_id"] for turn in conversation["turns"]] == [first_job, second_job]
    assert [turn["question"] for turn in conversation["turns"]] == [
        "How long do I brew green tea?",
        "And black tea?",
    ]

    # A reload brings the thread back; the recent list holds one conversation.
    await page.reload()
    await page.wait_for_selector(ANSWER_DONE)
    await page.wait_for_selector("#thread .turn")
    assert await thread_questions(page) == ["How long do I brew green tea?"]
    assert await page.text_content("#answer-question") == "And black tea?"
    assert await page.locator("#history a").count() == 1

    # "New conversation" starts afresh: no thread, and the next question begins another one.
    await page.click("#new-conversation")
    assert await page.is_hidden("#answer-card")
    assert await thread_questions(page) == []
    await ask(page, "What is oolong?")
    await page.wait_for_selector(ANSWER_DONE)
    assert await thread_questions(page) == []
    assert await page.locator("#history a").count() == 2
    other = await latest_conversation(page)
    assert other != conversation_id


async def test_stop_cancels_a_streaming_answer(stack: Stack, llm: Any, watched: Watched) -> None:
    page = watched.page
    await ingest(stack)
    llm.config.tokens, llm.config.tokens_per_second = 400, 10  # a slow answer: 40 s
    await page.goto(stack.base_url)
    await ask(page, "How long do I brew green tea?")
    await page.wait_for_selector("#answer.streaming")
    assert await page.is_visible("#stop-button")
    await page.click("#stop-button")
    await page.wait_for_selector("#job-error:has-text('cancelled')", timeout=20_000)
    assert await page.is_hidden("#stop-button")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        view = (await http.get(f"/jobs/{job_of(page)}")).json()
    assert view["status"] == "cancelled"


async def test_copy_an_answer_with_and_without_its_sources(stack: Stack, watched: Watched) -> None:
    page = watched.page
    await page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=stack.base_url
    )
    await ingest(stack)
    await page.goto(stack.base_url)
    await ask(page, "How long do I brew green tea?")
    await page.wait_for_selector(ANSWER_DONE)
    await page.click("#copy-button")
    await page.wait_for_selector("#action-note:has-text('Copied')")
    assert await page.evaluate("() => navigator.clipboard.readText()") == expected_answer(12)
    await page.click("#copy-sources-button")
    copied = await page.evaluate("() => navigator.clipboard.readText()")
    assert copied.startswith(expected_answer(12) + "\n\nSources:\n[1] Tea")


async def test_dark_mode_follows_the_system(stack: Stack, watched: Watched) -> None:
    page = watched.page
    background = "() => getComputedStyle(document.body).backgroundColor"
    await page.emulate_media(color_scheme="light")
    await page.goto(stack.base_url)
    light = await page.evaluate(background)
    await page.emulate_media(color_scheme="dark")
    dark = await page.evaluate(background)
    assert light == "rgb(245, 246, 248)"
    assert dark == "rgb(16, 20, 28)"
