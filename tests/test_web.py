"""The web page in a real headless browser (Debian's chromium driven by Playwright), against
the real API, worker, Valkey and Qdrant started by the fixtures."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rag_async.config import Settings
from rag_async.domain.identity import EventsTokens, KeyRing
from tests.conftest import REPO, Stack, ingest, keyed_settings, make_settings, running_stack
from tests.support.answer_logs import ANSWER_LOGS
from tests.support.browser import (  # skips the module without chromium or playwright
    ANSWER_DONE,
    Browser,
    Page,
    Watched,
    answer_text,
    ask,
    grows_to,
    open_page,
    shows_question,
)
from tests.support.openai_server import expected_answer

pytestmark = pytest.mark.timeout(60)


async def test_tokens_arrive_before_done_and_citations_open_the_chunk(
    stack: Stack, llm: Any, watched: Watched
) -> None:
    page = watched.page
    await ingest(stack)
    llm.config.tokens, llm.config.tokens_per_second = 30, 20  # ~1.5 s of streaming
    await page.goto(stack.base_url)
    await ask(page, "How long do I brew green tea?")

    # Text on screen while the done stage is not: the answer streams.
    partial = await page.wait_for_function(
        """() => {
            const text = document.getElementById('answer').textContent;
            return text.length > 0 && !document.querySelector('[data-stage=done].complete')
                ? text : null;
        }"""
    )
    streamed = await partial.json_value()
    await page.wait_for_selector(ANSWER_DONE)
    final = await answer_text(page)
    assert final == expected_answer(30)
    assert final.startswith(streamed) and len(streamed) < len(final)
    assert re.search(r"[?&]job=[0-9a-f]{32}$", page.url)
    # Each stage says how long it took.
    assert re.search(r"Generating\s*[\d.]+ m?s", str(await page.text_content("#stages")))

    # Sources are listed, and the [1] in the answer opens the chunk it cites.
    assert "Tea" in str(await page.text_content("#sources li"))
    await page.click("#answer button.cite")
    dialog = page.locator("#source-dialog")
    await dialog.wait_for(state="visible")
    # The title and the section the passage sits in.
    assert (await page.text_content("#source-title")) == "[1] Tea › Brewing"
    assert "Tea.md" in str(await page.text_content("#source-meta"))
    chunk = str(await page.text_content("#source-text"))
    assert "Brew green tea at 80 degrees Celsius for two minutes." in chunk
    await page.click("#source-close")
    await dialog.wait_for(state="hidden")

    # The live panel sees the worker.
    await page.wait_for_function(
        "() => document.getElementById('stat-workers').textContent === '1'"
    )


async def test_reload_mid_answer_resumes_without_repeating(
    stack: Stack, llm: Any, watched: Watched
) -> None:
    page = watched.page
    await ingest(stack)
    llm.config.tokens, llm.config.tokens_per_second = 60, 20  # ~3 s of streaming
    expected = expected_answer(60)
    await page.goto(stack.base_url)
    await ask(page, "Tell me about tea")
    await page.wait_for_function("() => document.getElementById('answer').textContent.length > 20")
    assert not await page.is_visible(ANSWER_DONE), "too late: the answer already finished"
    watched.event_urls.clear()
    await page.reload()

    await grows_to(page, expected)
    # It resumed from the last event it had, not from the start.
    resumed_from = [int(re.findall(r"last_event_id=(\d+)", url)[0]) for url in watched.event_urls]
    assert resumed_from and resumed_from[0] > 0, watched.event_urls


async def test_the_recent_list_reopens_an_earlier_conversation_at_phone_width(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    await page.set_viewport_size({"width": 375, "height": 760})
    await ingest(stack)
    await page.goto(stack.base_url)
    await ask(page, "First question about tea")
    await page.wait_for_selector(ANSWER_DONE)
    first_url = page.url
    await page.click("#new-conversation")  # a second conversation, not a follow-up
    await ask(page, "Second question about tea")
    await shows_question(page, "Second question about tea")
    await page.wait_for_selector(ANSWER_DONE)
    assert page.url != first_url

    await page.reload()  # the recent conversations live in this browser, not in the page
    items = page.locator("#history a")
    assert await items.count() == 2
    assert (await items.nth(1).text_content() or "").startswith("First question about tea")
    await items.nth(1).click()
    await shows_question(page, "First question about tea")
    await page.wait_for_selector(ANSWER_DONE)
    assert page.url == first_url
    assert await answer_text(page) == expected_answer(12)
    # Nothing sticks out sideways on a phone.
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 375


async def test_upload_a_markdown_file_then_ask_about_it(stack: Stack, watched: Watched) -> None:
    page = watched.page
    await page.goto(stack.base_url)
    document = "# Kettles\n\nA gooseneck kettle pours slowly, which suits pour-over coffee.\n"
    await page.set_input_files(
        "#file-input",
        files=[{"name": "kettles.md", "mimeType": "text/markdown", "buffer": document.encode()}],
    )
    await page.wait_for_selector(".upload.complete")
    assert "Added: 1 passage" in str(await page.text_content(".upload.complete"))

    await ask(page, "Which kettle suits pour-over coffee?")
    await page.wait_for_selector(ANSWER_DONE)
    assert "Kettles" in str(await page.text_content("#sources li"))
    await page.click("#answer button.cite")
    assert (await page.text_content("#source-title")) == "[1] Kettles"
    assert "kettles.md" in str(await page.text_content("#source-meta"))
    assert "gooseneck kettle" in str(await page.text_content("#source-text"))


async def test_markup_in_documents_stays_inert_text(
    valkey: Any, tmp_path: Path, browser: Browser
) -> None:
    # The offline extractive answerer quotes the document, so the markup reaches the answer too.
    settings = make_settings(valkey, tmp_path)
    payload = (
        "# Oolong\n\nSteep oolong for three minutes <script>window.__pwned = 'script'</script> "
        "in hot water.\n\nOolong likes water at 90 degrees "
        "<img src=x onerror=\"window.__pwned = 'img'; alert('img')\"> and a small pot.\n"
    )
    # Without the page's Content-Security-Policy safety net: the rendering itself must be safe.
    async with running_stack(settings) as stack, open_page(browser, bypass_csp=True) as watched:
        page = watched.page
        await ingest(stack, payload, title="<img src=x onerror=alert('title')>")
        await page.goto(stack.base_url)
        await ask(page, "How long should oolong steep in hot water?")
        await page.wait_for_selector(ANSWER_DONE)
        answer = await answer_text(page)
        # The answer screen drops raw HTML tags on the server (llm/raw_html.py); their text
        # stays, as inert text.
        assert "window.__pwned = 'script'" in answer
        assert "<script>" not in answer and "<img" not in answer
        await page.click("#answer button.cite")
        assert "<img src=x onerror=" in str(await page.text_content("#source-text"))
        title = str(await page.text_content("#source-title"))
        assert title.startswith("[1] <img src=x onerror=alert('title')>"), title
        await asyncio.sleep(0.3)  # an image error handler would have fired by now
        assert watched.dialogs == []
        assert await page.evaluate("() => window.__pwned") is None
        assert (
            await page.evaluate("() => document.querySelectorAll('img, #answer script').length")
            == 0
        )


def test_no_script_of_ours_assigns_html() -> None:
    """Markdown becomes elements through web/markdown.js only (tests/test_page_markdown.py)."""
    for script in (REPO / "web").glob("*.js"):
        source = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script.name} uses {sink}"


async def test_a_too_long_question_is_refused_in_words(
    settings: Settings, watched: Watched
) -> None:
    settings.max_query_chars = 40
    page = watched.page
    async with running_stack(settings, with_worker=False) as stack:
        await page.goto(stack.base_url)
        await ask(page, "x" * 60)
        await page.wait_for_selector("#alert:not([hidden])")
        assert (await page.text_content("#alert")) == (
            "query is 60 characters long; the limit is 40"
        )
        assert await page.input_value("#question") == "x" * 60, "the question is kept"


async def test_an_unreachable_api_is_said_in_words(settings: Settings, watched: Watched) -> None:
    page = watched.page
    async with running_stack(settings, with_worker=False) as stack:
        await page.goto(stack.base_url)
        await page.wait_for_function(
            "() => document.getElementById('service-note').textContent.includes('No worker')"
        )
        await ask(page, "anyone there?")  # nobody works: the job stays queued
        await page.wait_for_selector("[data-stage=queued].active")
        assert "#1 in line" in str(await page.text_content("[data-stage=queued]"))
    # The server is gone: the waiting answer says it is reconnecting (first that the stream
    # was interrupted, then, once a try has failed, that the service cannot be reached), and a
    # new question fails.
    await page.wait_for_function(
        "() => { const text = document.getElementById('connection').textContent;"
        " return text.includes('cannot be reached') && text.includes('Reconnecting'); }"
    )
    await ask(page, "and now?")
    await page.wait_for_selector("#alert:not([hidden])")
    assert "The service cannot be reached" in str(await page.text_content("#alert"))
    await page.wait_for_function(
        "() => document.getElementById('service-note').textContent === 'Service unreachable.'",
        timeout=10_000,
    )


async def test_a_failed_job_shows_why(
    valkey: Any, tmp_path: Path, llm: Any, watched: Watched
) -> None:
    # A path the LLM server does not serve: HTTP 404, which is not retried.
    settings = make_settings(valkey, tmp_path, llm_base_url=f"{llm.base_url}/nope", llm_api_key="k")
    page = watched.page
    async with running_stack(settings) as stack:
        await page.goto(stack.base_url)
        await ask(page, "tea?")
        await page.wait_for_selector("#job-error:not([hidden])")
        message = str(await page.text_content("#job-error"))
        assert message.startswith("The job failed: ") and "HTTP 404" in message
        assert await page.is_visible("[data-stage].failed")
        assert await page.is_hidden(".stage.active"), "no stage left spinning"


async def test_the_page_folds_the_answer_so_far_by_the_shared_rule(
    settings: Settings, watched: Watched
) -> None:
    """web/transcript.js against the logs that /job-status and the Python client are held to
    (tests/test_transcript.py), in the browser itself."""
    page = watched.page
    async with running_stack(settings, with_worker=False) as stack:
        await page.goto(stack.base_url)
        folded = await page.evaluate(
            """async (logs) => {
                const { Transcript } = await import('/static/transcript.js');
                return logs.map((events) => {
                    const transcript = new Transcript();
                    const dropped = events.filter((event) => transcript.apply(event));
                    return { answer: transcript.text, discarded: transcript.discarded, dropped };
                });
            }""",
            [log.events for log in ANSWER_LOGS],
        )
    for log, result in zip(ANSWER_LOGS, folded, strict=True):
        assert (result["answer"], result["discarded"]) == (log.answer, log.discarded), log.name
        # Told once for each dead attempt's text, at the status announcing the next attempt.
        assert [event["type"] for event in result["dropped"]] == ["status"] * len(log.discarded)


# --- API keys (rag_async/identity.py) ------------------------------------------------------

USER_KEY, ADMIN_KEY = "page-reader-secret-0123456789", "page-admin-secret-0123456789"
WRONG_KEY = "not-a-key-of-this-api-0123"
KEY_FORM = "#key-form:not([hidden])"
JOB_VIEW = re.compile(r"/jobs/[0-9a-f]{32}$")
JOB_EVENTS = re.compile(r"/jobs/[0-9a-f]{32}/events")


@pytest.fixture
async def keyed(valkey: Any, tmp_path: Path, llm: Any) -> AsyncIterator[Stack]:
    """The stack with API keys, a reader's and an admin's (like tests/test_auth.py's)."""
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 12, 200
    settings = keyed_settings(
        valkey, tmp_path, llm, users={"reader": USER_KEY}, admins={"ops": ADMIN_KEY}
    )
    async with running_stack(settings) as stack:
        yield stack


async def enter_key(page: Page, key: str) -> None:
    await page.wait_for_selector(KEY_FORM)
    await page.fill("#api-key", key)
    await page.click("#key-save")


async def message_says(page: Page, selector: str, words: str) -> None:
    script = "([s, words]) => document.querySelector(s).textContent.includes(words)"
    await page.wait_for_function(script, arg=[selector, words])


def token_of(url: str) -> str:
    return str(re.findall(r"[?&]token=([^&]+)", url)[0])


def last_event_id_of(url: str) -> int:
    return int(re.findall(r"[?&]last_event_id=(\d+)", url)[0])


def assert_no_key_in_urls(watched: Watched, *keys: str) -> None:
    urls = [request.url for request in watched.requests] + [watched.page.url]
    for key in keys:
        assert not [url for url in urls if key in url], f"the key went into a URL: {urls}"


async def test_a_keyed_api_asks_for_the_key_then_answers(
    keyed: Stack, watched: Watched, llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Still running when the page opens it, so the page follows it with EventSource (a job
    # already over is shown from its view, with no stream to check).
    monkeypatch.setattr(llm.config, "ttft", 0.5)
    page = watched.page
    await page.goto(keyed.base_url)
    # The page's first calls (the live figures, the collections) are refused: the field shows.
    await page.wait_for_selector(KEY_FORM)
    assert "This API needs a key" in str(await page.text_content("#key-message"))
    assert await page.get_attribute("#api-key", "type") == "password"
    assert "Service figures need an API key" in str(await page.text_content("#service-note"))

    # A question asked without a key says why it is not asked, then is asked once one is.
    await ask(page, "How long do I brew green tea?")
    await message_says(page, "#alert", "This API needs a key")
    await enter_key(page, USER_KEY)
    await page.wait_for_selector(ANSWER_DONE)
    assert await answer_text(page) == expected_answer(12)
    assert await page.is_hidden("#alert") and await page.is_hidden("#key-form")

    # A key that is not an admin's sees counts: the workers, and no failures figure at all.
    await page.wait_for_function(
        "() => document.getElementById('stat-workers').textContent === '1'"
    )
    assert await page.is_hidden("#stat-failures") and await page.is_hidden("#failures")

    # The key went in the Authorization header only; EventSource followed with the token.
    chats = [r for r in watched.requests if r.method == "POST" and r.url.endswith("/chat")]
    assert len(chats) == 2, [r.url for r in chats]
    assert "authorization" not in await chats[0].all_headers()
    assert (await chats[1].all_headers())["authorization"] == f"Bearer {USER_KEY}"
    assert watched.event_urls and all(token_of(url) for url in watched.event_urls)
    for stream in [r for r in watched.requests if JOB_EVENTS.search(r.url)]:
        assert "authorization" not in await stream.all_headers()
    assert_no_key_in_urls(watched, USER_KEY)


async def test_a_reload_keeps_the_key_and_resumes_with_a_fresh_token(
    keyed: Stack, llm: Any, watched: Watched
) -> None:
    page = watched.page
    llm.config.tokens, llm.config.tokens_per_second = 60, 20  # ~3 s of streaming
    expected = expected_answer(60)
    await page.goto(keyed.base_url)
    await enter_key(page, USER_KEY)
    await ask(page, "Tell me about tea")
    await page.wait_for_function("() => document.getElementById('answer').textContent.length > 20")
    assert not await page.is_visible(ANSWER_DONE), "too late: the answer already finished"
    job_id = re.findall(r"job=([0-9a-f]{32})", page.url)[0]

    # After the reload, the page is first handed an events_url whose token has expired (as
    # when it waited past the token's life): the API refuses the stream, and the page must
    # fetch a fresh events_url from GET /jobs/{id} and go on from the last event it has.
    settings = keyed.settings
    expired = EventsTokens(KeyRing.from_settings(settings).token_secret(settings), ttl=-1)
    stale = expired.issue(job_id, "reader")
    handed_out: list[str] = []  # the events_url of each GET /jobs/{id} answer

    async def stale_at_first(route: Any) -> None:
        response = await route.fetch()
        view = await response.json()
        if not handed_out:
            view["events_url"] = view["events_url"].replace(token_of(view["events_url"]), stale)
        handed_out.append(view["events_url"])
        await route.fulfill(response=response, json=view)

    refused: list[str] = []

    def on_response(response: Any) -> None:
        if response.status == 401:
            refused.append(response.url)

    page.on("response", on_response)
    await page.route(JOB_VIEW, stale_at_first)
    watched.event_urls.clear()
    await page.reload()

    await grows_to(page, expected)

    # The key was kept: nothing but the stale stream was refused, and the field stayed shut.
    assert await page.is_hidden("#key-form")
    assert await page.evaluate("() => localStorage.getItem('rag-async:api-key')") == USER_KEY
    streams = watched.event_urls
    assert len(refused) == 1 and token_of(refused[0]) == stale, refused
    # The streams went to the events_url as handed out, the stale one first, then a fresh
    # one; each from the last event the page had.
    assert len(streams) >= 2, streams
    assert token_of(streams[0]) == stale
    assert token_of(streams[1]) != stale
    assert all(token_of(url) in map(token_of, handed_out) for url in streams), (streams, handed_out)
    assert 0 < last_event_id_of(streams[0]) <= last_event_id_of(streams[1])
    assert_no_key_in_urls(watched, USER_KEY)


async def test_a_wrong_key_is_refused_in_words(keyed: Stack, watched: Watched) -> None:
    page = watched.page
    await page.goto(keyed.base_url)
    await enter_key(page, WRONG_KEY)
    # What waited for a key runs again with it, is refused, and the field says so.
    await message_says(page, "#key-message", "This API key was refused")
    assert await page.is_visible("#key-form")
    await ask(page, "tea?")
    await message_says(page, "#alert", "This API key was refused")
    await page.click("#key-reveal")
    assert await page.get_attribute("#api-key", "type") == "text"

    # An admin's key sees the failures as well (in the service panel, once opened).
    await page.click("#service summary")
    await page.fill("#api-key", ADMIN_KEY)
    await page.click("#key-save")
    await page.wait_for_selector(ANSWER_DONE)  # the refused question, asked again
    assert await page.get_attribute("#api-key", "type") == "password"
    await page.wait_for_function(
        "() => document.getElementById('stat-failures').textContent === '0'"
    )
    assert await page.is_visible("#stat-failures")

    # Forgetting the key sends none again.
    await page.click("#key-button")
    await page.click("#key-forget")
    assert await page.evaluate("() => localStorage.getItem('rag-async:api-key')") is None
    assert await page.input_value("#api-key") == ""
    assert_no_key_in_urls(watched, WRONG_KEY, ADMIN_KEY)


def _sample_document() -> str:
    from tests.conftest import SAMPLE_DOCUMENT

    return SAMPLE_DOCUMENT


async def test_uploading_an_unchanged_file_again_says_unchanged(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    await page.goto(stack.base_url)
    document = "# Kettles\n\nA gooseneck kettle pours slowly, which suits pour-over coffee.\n"
    file = {"name": "kettles.md", "mimeType": "text/markdown", "buffer": document.encode()}
    await page.set_input_files("#file-input", files=[file])
    await page.wait_for_selector(".upload.complete")
    await page.set_input_files("#file-input", files=[file])
    await page.wait_for_selector(".upload.complete >> nth=1")
    latest, first = await page.locator(".upload.complete").all_text_contents()
    assert "Added: 1 passage" in first
    assert "Unchanged: 1 passage already indexed" in latest
