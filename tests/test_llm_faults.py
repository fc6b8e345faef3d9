"""The LLM misbehaves; the service copes. Each test runs the real service (API under uvicorn,
an arq worker, Valkey) against the OpenAI-compatible test server told to fail in one way, and
asserts what a client sees and what the LLM was asked.

Timeouts are shortened through settings (first token 1 s, idle 0.5 s) so that every failure
shows in seconds; the job-level backoff is the service's own (1 to 2 s before a second try).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rag_async.client.api import Answer, JobEvent
from rag_async.config import Settings
from rag_async.domain.errors import ProviderError
from rag_async.domain.sources import Source
from rag_async.providers.breaker import BreakerOpen, CircuitBreaker, guarded_stream
from rag_async.providers.llm import OpenAIChat, StreamTimeouts
from tests.conftest import Stack, cli_env, make_settings, run_cli, running_stack
from tests.support.openai_server import Fault, OpenAIApp, expected_answer

pytestmark = pytest.mark.timeout(90)

CHROMIUM = Path("/usr/bin/chromium")

FAST = {
    "llm_first_token_timeout": 1.0,
    "llm_idle_timeout": 0.5,
    "llm_timeout": 20.0,
    "worker_heartbeat": 0.2,
}


@pytest.fixture
def faulty(llm: OpenAIApp) -> Any:
    """The session's test LLM, well-behaved and with fresh stats; left without faults."""
    llm.config.faults.clear()
    llm.config.fault = None
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 12, 200
    llm.stats.reset()
    yield llm
    llm.config.faults.clear()
    llm.config.fault = None


def fault_settings(valkey: Any, tmp_path: Path, llm: OpenAIApp, **overrides: Any) -> Settings:
    values = {**FAST, "llm_base_url": llm.base_url, "llm_api_key": "test-key", **overrides}
    return make_settings(valkey, tmp_path, **values)


async def until(condition: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def follow(stack: Stack, job_id: str) -> tuple[list[JobEvent], Answer, list[str]]:
    """Every event of the job, the answer as a client shows it, and each text the client
    showed on the way (after every event)."""
    events, answer, shown = [], Answer(), []
    async with asyncio.timeout(60):
        async for event in stack.client.follow(job_id):
            events.append(event)
            answer.apply(event)
            shown.append(answer.text)
    return events, answer, shown


async def job_status(stack: Stack, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.get("/job-status", params={"job_id": job_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def attempts_announced(events: list[JobEvent]) -> list[int]:
    seen: list[int] = []
    for event in events:
        attempt = event.data.get("attempt") if event.type == "status" else None
        if attempt and attempt not in seen:
            seen.append(attempt)
    return seen


# Retryable failures: the answer completes, and the retry waits as it should.


async def test_429_retry_after_is_honoured_by_the_jobs_retry(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    # No retry inside the call: the job is retried by the worker, no sooner than the server
    # said (4 s; the job's own backoff would be 1 to 2 s).
    faulty.fail_next("429", retry_after=4)
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=0)
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events, answer, _ = await follow(stack, job_id)
    assert answer.final is not None and answer.final.type == "done"
    assert answer.text == expected_answer(12)
    assert attempts_announced(events) == [1, 2]
    refused, answered = faulty.stats.calls
    assert (refused.fault, answered.outcome) == ("429", "complete")
    assert refused.ended is not None and answered.started - refused.ended >= 4.0
    assert faulty.stats.chat_requests == 2  # one extra LLM call


async def test_429_retry_after_longer_than_the_first_token_wait_is_honoured_in_the_call(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    # The call retries by itself; the wait the server asks for (1.5 s) is longer than the
    # first-token timeout (1 s) and must not be mistaken for a silent LLM.
    faulty.fail_next("429", retry_after=1.5)
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=2)
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events, answer, _ = await follow(stack, job_id)
    assert answer.final is not None and answer.final.type == "done", answer.final
    assert answer.text == expected_answer(12)
    assert attempts_announced(events) == [1]  # no new attempt: the call itself retried
    refused, answered = faulty.stats.calls
    assert refused.ended is not None and answered.started - refused.ended >= 1.5
    assert faulty.stats.chat_requests == 2


async def test_500_is_retried_with_backoff_then_completes(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    # Two tries per call, two calls: 500, 500 (the call gives up, the job backs off),
    # 500, then the answer.
    faulty.fail_next("500", count=3)
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=1, job_max_tries=3)
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events, answer, _ = await follow(stack, job_id)
        view = await job_status(stack, job_id)
    assert answer.text == expected_answer(12) and view["answer"] == expected_answer(12)
    assert (view["status"], view["attempt"]) == ("complete", 2)
    assert attempts_announced(events) == [1, 2]
    calls = faulty.stats.calls
    assert [c.fault for c in calls] == ["500", "500", "500", None]
    gaps = [b.started - a.ended for a, b in itertools.pairwise(calls) if a.ended]
    assert gaps[0] >= 0.25, "the call's own retry backs off (0.5 s, jittered)"
    assert gaps[1] >= 1.0, "the job's retry backs off (2 s, jittered)"
    assert gaps[2] >= 0.25
    assert faulty.stats.chat_requests == 4


# Refusals: no retry, one LLM call, a clear error, and the breaker is not bothered.


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("400", ["HTTP 400", "maximum context length"]),
        ("401", ["HTTP 401", "Incorrect API key", "RAG_LLM_API_KEY"]),
    ],
)
async def test_a_refusal_fails_at_once_without_a_retry(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp, kind: str, says: list[str]
) -> None:
    faulty.config.fault = Fault(kind)  # every call: a retry would be refused again
    settings = fault_settings(
        valkey, tmp_path, faulty, llm_max_retries=2, job_max_tries=3, breaker_threshold=1
    )
    async with running_stack(settings) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        started = time.monotonic()
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events, answer, _ = await follow(stack, job_id)
        elapsed = time.monotonic() - started
        view = await job_status(stack, job_id)
        assert await stack.client.dead_letters() == []  # nothing to requeue: it was refused
        await asyncio.sleep(0.5)  # a heartbeat or two
        breakers = (await http.get("/readyz")).json()["breakers"]
    assert answer.final is not None and answer.final.type == "error"
    message = answer.final.data["message"]
    assert all(part in message for part in says), message
    assert (view["status"], view["attempt"]) == ("failed", 1) and view["error"] == message
    assert attempts_announced(events) == [1]
    assert faulty.stats.chat_requests == 1, "a refusal is not retried"
    assert elapsed < 3
    assert breakers.get("llm") == "closed", "a refusal says nothing of the LLM's health"


async def test_a_malformed_stream_fails_at_once(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    faulty.fail_next("malformed", after=2)
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=2, job_max_tries=3)
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        _, answer, _ = await follow(stack, job_id)
        view = await job_status(stack, job_id)
    assert answer.final is not None and answer.final.type == "error"
    assert "malformed stream line" in answer.final.data["message"]
    assert (view["status"], view["attempt"]) == ("failed", 1)
    assert faulty.stats.chat_requests == 1


# Silence: a hung or trickling stream fails in seconds, not after the SDK's ten minutes.


async def test_a_hang_after_headers_fails_within_the_first_token_timeout_and_is_retried(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    faulty.fail_next("hang")  # headers and the role chunk, then nothing for 5 minutes
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=0)
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events, answer, _ = await follow(stack, job_id)
    assert answer.text == expected_answer(12)
    assert attempts_announced(events) == [1, 2]
    hung, answered = faulty.stats.calls
    assert (hung.fault, hung.outcome, answered.outcome) == ("hang", "disconnected", "complete")
    assert hung.ended is not None
    # The server counts from the request's body, the worker from just before sending it.
    assert 0.9 <= hung.ended - hung.started < 2.5, "the worker hung up after 1 s"
    assert faulty.stats.active_streams == 0


async def test_a_trickle_fails_on_the_idle_timeout(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    faulty.config.fault = Fault("trickle", interval=3.0)  # a token, then one every 3 s
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=2, job_max_tries=1)
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events, answer, _ = await follow(stack, job_id)
    assert "token" in [event.type for event in events]  # it had started answering
    assert answer.final is not None and answer.final.type == "error"
    assert "more within 0.5 s (idle timeout)" in answer.final.data["message"]
    [call] = faulty.stats.calls  # text was out: no retry within the call
    assert call.ended is not None and call.ended - call.started < 2.0


# A stream that breaks mid-answer: the job retries and the client sees one clean answer.


@pytest.mark.parametrize("kind", ["drop", "truncate"])
async def test_a_broken_stream_is_retried_and_the_client_sees_one_clean_answer(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp, kind: str
) -> None:
    faulty.config.tokens, faulty.config.tokens_per_second = 30, 60
    faulty.fail_next(kind, after=8)  # 8 tokens, then the connection is cut / the body ends
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=2)
    expected = expected_answer(30)
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events, answer, shown = await follow(stack, job_id)
        view = await job_status(stack, job_id)
    # The dead attempt's text reached the client, then the new attempt was announced...
    types = [event.type for event in events]
    restart = next(i for i, e in enumerate(events) if e.type == "status" and e.data["attempt"] == 2)
    assert "token" in types[:restart], "the first attempt had streamed some text"
    [dropped] = answer.discarded
    assert dropped and expected_answer(8).startswith(dropped)
    # ...and from then on the client only ever showed a prefix of the real answer.
    assert all(expected.startswith(text) for text in shown[restart:]), shown
    assert types.count("done") == 1 and types[-1] == "done"
    assert answer.text == expected and events[-1].data["answer"] == expected
    assert (view["status"], view["answer"], view["attempt"]) == ("complete", expected, 2)
    assert [c.outcome for c in faulty.stats.calls] == [
        "dropped" if kind == "drop" else "truncated",
        "complete",
    ]  # the broken call was not retried within the call: its text was already out


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (see tests/test_web.py)")
async def test_the_web_page_drops_a_dead_attempts_text(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    faulty.config.tokens, faulty.config.tokens_per_second = 30, 40
    faulty.fail_next("drop", after=10)
    settings = fault_settings(valkey, tmp_path, faulty, llm_max_retries=0)
    expected = expected_answer(30)
    async with (
        running_stack(settings) as stack,
        playwright_api.async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = await (await browser.new_context(bypass_csp=True)).new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            # Every text the answer box shows, as the user would see it change.
            await page.add_init_script(
                """window.__shown = [];
                document.addEventListener('DOMContentLoaded', () => {
                  const box = document.getElementById('answer');
                  new MutationObserver(() => window.__shown.push(box.textContent))
                    .observe(box, {childList: true, subtree: true, characterData: true});
                });"""
            )
            await page.goto(stack.base_url)
            await page.fill("#question", "tea?")
            await page.press("#question", "Enter")
            await page.wait_for_selector("[data-stage=done].complete")
            final = str(await page.text_content("#answer"))
            shown: list[str] = await page.evaluate("window.__shown")
        finally:
            await browser.close()
    assert errors == []
    assert final == expected
    partial = [text for text in shown if text and not expected.startswith(text)]
    assert partial == [], "the page showed the dead attempt's text and the new one together"
    first_text = next(i for i, text in enumerate(shown) if text)
    assert "" in shown[first_text:], "the page showed the first attempt's text, then cleared it"
    assert [c.outcome for c in faulty.stats.calls] == ["dropped", "complete"]


# The breaker: repeated failures open it; jobs wait without spending tries; a probe closes it.


async def test_the_breaker_opens_defers_jobs_without_spending_tries_and_closes(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    faulty.config.fault = Fault("500")
    settings = fault_settings(
        valkey,
        tmp_path,
        faulty,
        llm_max_retries=0,
        breaker_threshold=2,
        breaker_reset=3.0,
        job_max_tries=1,  # a deferral that counted as a try would end the job
    )
    async with running_stack(settings) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:

        async def breaker_is(state: str) -> bool:
            return bool((await http.get("/readyz")).json()["breakers"].get("llm") == state)

        for _ in range(2):  # two failures in a row open it
            failing = (await stack.client.ask("tea?"))["job_id"]
            _, answer, _ = await follow(stack, failing)
            assert answer.final is not None and "HTTP 500" in answer.final.data["message"]
        await until(lambda: breaker_is("open"), within=5)
        opened = time.monotonic()

        waiting = [(await stack.client.ask(f"tea {i}?"))["job_id"] for i in range(3)]
        await asyncio.sleep(1.0)
        for job_id in waiting:  # deferred before starting: no attempt, no LLM call
            view = await stack.client.job(job_id)
            assert (view["status"], view["attempt"]) == ("queued", 0), view
        assert faulty.stats.chat_requests == 2

        faulty.config.fault = None  # the LLM is back; the breaker learns it from a probe
        answers = await asyncio.gather(*(stack.client.answer(job_id) for job_id in waiting))
        assert [a.text for a in answers] == [expected_answer(12)] * 3
        await until(lambda: breaker_is("closed"), within=5)
        views = [await stack.client.job(job_id) for job_id in waiting]
    assert [view["attempt"] for view in views] == [1, 1, 1]
    calls = faulty.stats.calls
    assert len(calls) == 5
    probe, *after_probe = calls[2:]
    assert probe.started - opened >= 3.0 - 1.0, "nothing reached the LLM while it was open"
    assert probe.ended is not None
    assert all(call.started >= probe.ended for call in after_probe), "one probe, then the rest"


# The breaker and the LLM client on their own, against the test server.


def _chat(llm: OpenAIApp, **timeouts: float) -> OpenAIChat:
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0)
    return OpenAIChat(client, "m", max_tokens=64, timeouts=StreamTimeouts(**timeouts))


SOURCES = [Source(n=1, document_id="d", title="Tea", chunk=0, score=1.0, text="Tea is a drink.")]


async def _drain(stream: AsyncIterator[str]) -> str:
    return "".join([piece async for piece in stream])


async def test_a_half_open_breaker_lets_one_probe_through(faulty: OpenAIApp) -> None:
    chat = _chat(faulty, first_token=1.0, idle=0.5, total=10.0)
    breaker = CircuitBreaker("llm", threshold=2, reset_after=0.5)
    faulty.config.fault = Fault("500")
    for _ in range(2):
        with pytest.raises(ProviderError):
            await _drain(guarded_stream(breaker, chat.stream("q", SOURCES)))
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen):  # refused without asking the LLM
        await _drain(guarded_stream(breaker, chat.stream("q", SOURCES)))
    assert faulty.stats.chat_requests == 2

    await asyncio.sleep(0.5)
    assert breaker.state == "half_open"
    # Two jobs at once: one probes (and fails: open again), the other waits.
    faulty.config.ttft = 0.2
    outcomes = await asyncio.gather(
        *(_drain(guarded_stream(breaker, chat.stream("q", SOURCES))) for _ in range(2)),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["BreakerOpen", "ProviderError"]
    assert faulty.stats.chat_requests == 3 and breaker.state == "open"

    # A probe that is cancelled says nothing: the next job may probe at once.
    await asyncio.sleep(0.5)
    faulty.config.fault, faulty.config.ttft = None, 5.0
    probe = asyncio.create_task(_drain(guarded_stream(breaker, chat.stream("q", SOURCES))))
    await until(lambda: _true(faulty.stats.active_streams == 1), within=5)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state == "half_open" and not breaker.probing
    faulty.config.ttft = 0.0
    text = await _drain(guarded_stream(breaker, chat.stream("q", SOURCES)))
    assert text == expected_answer(12) and breaker.state == "closed"
    await chat.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_the_llm_client_hangs_up_when_its_consumer_stops(faulty: OpenAIApp) -> None:
    faulty.config.tokens, faulty.config.tokens_per_second = 400, 50
    chat = _chat(faulty, first_token=1.0, idle=1.0, total=30.0)
    breaker = CircuitBreaker("llm", threshold=1, reset_after=30)
    stream = guarded_stream(breaker, chat.stream("q", SOURCES))
    async for _ in stream:
        break  # e.g. appending the event failed
    await stream.aclose()  # type: ignore[attr-defined]
    await until(lambda: _true(faulty.stats.active_streams == 0), within=3)
    assert faulty.stats.disconnects == 1 and breaker.state == "closed"
    await chat.aclose()


async def test_a_slow_consumer_is_not_the_llms_idle_time(faulty: OpenAIApp) -> None:
    # The idle timeout measures the LLM's silence, not the time the consumer takes with a
    # token (say, a slow Redis): a timer held across the yield would cancel the consumer.
    faulty.config.tokens, faulty.config.tokens_per_second = 3, 0
    chat = _chat(faulty, first_token=1.0, idle=0.3, total=10.0)
    pieces = []
    async for piece in chat.stream("q", SOURCES):
        pieces.append(piece)
        await asyncio.sleep(0.6)  # twice the idle timeout, in the consumer
    assert "".join(pieces) == expected_answer(3)
    await chat.aclose()


async def test_the_cli_starts_over_when_an_attempt_dies(
    valkey: Any, tmp_path: Path, faulty: OpenAIApp
) -> None:
    faulty.fail_next("drop", after=5)
    settings = fault_settings(valkey, tmp_path, faulty)
    async with running_stack(settings) as stack:
        env = cli_env(settings, RAG_API_URL=stack.base_url)
        result = await asyncio.to_thread(run_cli, "ask", "tea?", env=env)
    assert result.returncode == 0, result.stderr
    dead, notice, retried = result.stdout.partition("[that attempt failed; the answer starts over]")
    assert notice, result.stdout
    assert dead.strip() and expected_answer(12).startswith(dead.strip())
    assert retried.strip().startswith(expected_answer(12)), retried
