"""A question's whole path over HTTP, against the real app, worker, Valkey, Qdrant and SDK."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse

from tests.conftest import Stack, ingest, running_stack
from tests.support.events import decode_event
from tests.support.openai_server import expected_answer


async def _raw_events(base_url: str, job_id: str, **headers: str) -> list[tuple[int, str, Any]]:
    """Read a job's SSE stream to its end, as (id, event, data) triples."""
    events = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
        aconnect_sse(http, "GET", f"/jobs/{job_id}/events", headers=headers) as source,
    ):
        async for sse in source.aiter_sse():
            events.append((int(sse.id), sse.event, orjson.loads(sse.data)))
            if sse.event in ("done", "error"):
                break
    return events


async def test_question_streams_and_poll_tells_the_same_story(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    llm.config.tokens, llm.config.tokens_per_second = 30, 100  # ~0.3 s of streaming
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post("/chat", json={"query": "How long do I brew green tea?"})
        assert response.status_code == 202
        accepted = response.json()
        assert accepted["status_url"] == f"/job-status?job_id={accepted['job_id']}"
        job_id = accepted["job_id"]

        events = await _raw_events(stack.base_url, job_id)
        kinds = [kind for _, kind, _ in events]
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))  # ids 1, 2, 3...
        assert kinds[0] == "status" and kinds[-1] == "done"
        assert "sources" in kinds
        assert kinds.count("token") >= 2, "tokens arrive in several batches, before done"
        assert kinds.count("token") < 30, "tokens are coalesced, not one event per token"
        streamed = "".join(data["text"] for _, kind, data in events if kind == "token")
        assert streamed == expected_answer(30)
        for _, kind, data in events:  # every wire event is one of the typed events
            assert decode_event(orjson.dumps(data)).type == kind

        sources = next(data["sources"] for _, kind, data in events if kind == "sources")
        assert sources[0]["title"] == "Tea" and sources[0]["n"] == 1
        assert "80 degrees" in "".join(s["text"] for s in sources)
        # The LLM was given those numbered sources in its prompt.
        prompt = llm.stats.last_chat_request["messages"][-1]["content"]
        assert '<source n="1" title="Tea"' in prompt and "How long do I brew green tea?" in prompt

        status = (await http.get(accepted["status_url"])).json()
        assert status["status"] == "complete" and status["stage"] == "done"
        assert status["answer"] == streamed and not status["answer_is_partial"]
        assert status["sources"] == sources
        assert status["attempt"] == 1
        assert set(status["timings"]) >= {"queue_wait", "retrieval", "time_to_first_token", "total"}
        assert status["providers"]["llm"].startswith("openai-compatible:")
        assert status["providers"]["retrieval"].startswith("lexical")
        assert (await http.get(f"/jobs/{job_id}")).json() == status


async def test_poll_shows_progress_while_the_answer_streams(stack: Stack, llm: Any) -> None:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 40, 40  # ~1 s
    accepted = await stack.client.ask("what is in the documents?")
    seen: set[tuple[str, str | None]] = set()
    partial_seen = False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        view = await stack.client.job(accepted["job_id"])
        seen.add((view["status"], view["stage"]))
        if view["answer_is_partial"] and view["answer"]:
            assert expected_answer(40).startswith(view["answer"])
            partial_seen = True
        if view["status"] == "complete":
            break
        await asyncio.sleep(0.02)
    assert ("in_progress", "generating") in seen
    assert partial_seen, "a running job's poll shows the text streamed so far"
    assert view["answer"] == expected_answer(40)


async def test_resume_mid_stream_loses_and_repeats_nothing(stack: Stack, llm: Any) -> None:
    llm.config.tokens, llm.config.tokens_per_second = 40, 50  # ~0.8 s, many batches
    job_id = (await stack.client.ask("tell me about tea"))["job_id"]
    first: list[tuple[int, str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http,
        aconnect_sse(http, "GET", f"/jobs/{job_id}/events") as source,
    ):
        async for sse in source.aiter_sse():
            first.append((int(sse.id), sse.event, orjson.loads(sse.data)))
            if sse.event == "token" and sum(kind == "token" for _, kind, _ in first) == 2:
                break  # drop the connection mid-answer
    assert first[-1][1] == "token"
    rest = await _raw_events(stack.base_url, job_id, **{"Last-Event-ID": str(first[-1][0])})
    everything = first + rest
    assert [i for i, _, _ in everything] == list(range(1, len(everything) + 1))
    assert rest[-1][1] == "done"
    assert "".join(d["text"] for _, k, d in everything if k == "token") == expected_answer(40)


async def test_resume_after_completion(stack: Stack) -> None:
    job_id = (await stack.client.ask("tell me about tea"))["job_id"]
    full = await _raw_events(stack.base_url, job_id)
    last = full[-1][0]
    # Header form, and the query form EventSource needs: the rest, exactly.
    assert await _raw_events(stack.base_url, job_id, **{"Last-Event-ID": "2"}) == full[2:]
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        async with aconnect_sse(http, "GET", f"/jobs/{job_id}/events?last_event_id=3") as source:
            replayed = [int(sse.id) async for sse in source.aiter_sse()]
        assert replayed == list(range(4, last + 1))
        # Everything seen: 204, which also stops EventSource from reconnecting.
        caught_up = await http.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(last)})
        assert caught_up.status_code == 204


async def test_keep_alive_comments_while_queued(settings: Any) -> None:
    settings.sse_ping_interval = 1.0
    async with running_stack(settings, with_worker=False) as stack:  # nobody takes the job
        job_id = (await stack.client.ask("anyone there?"))["job_id"]
        async with (
            httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http,
            http.stream("GET", f"/jobs/{job_id}/events") as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if b": ping" in received:
                    break
        assert received.startswith(b": ping"), received


async def test_many_jobs_overlap_in_one_worker(stack: Stack, llm: Any) -> None:
    llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 1.0, 5, 0  # ~1 s each
    started = time.monotonic()
    accepted = await asyncio.gather(*(stack.client.ask(f"question {i}") for i in range(20)))

    async def finish(job_id: str) -> str:
        return [event async for event in stack.client.follow(job_id)][-1].type

    results = await asyncio.gather(*(finish(a["job_id"]) for a in accepted))
    elapsed = time.monotonic() - started
    assert results == ["done"] * 20
    # Sequentially this would take 20 s; overlapping, about 1 s plus overhead.
    assert elapsed < 5, f"20 one-second jobs took {elapsed:.1f} s: they did not overlap"


async def test_offline_providers_answer_from_the_documents(valkey: Any, tmp_path: Any) -> None:
    from tests.conftest import make_settings

    settings = make_settings(valkey, tmp_path)  # no LLM configured: the offline defaults
    async with running_stack(settings) as stack:
        await ingest(stack)
        job_id = (await stack.client.ask("How long should black tea brew?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        done = events[-1]
        assert done.type == "done"
        assert "four minutes" in done.data["answer"] and "[1]" in done.data["answer"]
        assert done.data["providers"]["llm"].startswith("extractive (offline")
        assert done.data["providers"]["retrieval"].startswith("lexical")


async def test_hybrid_retrieval_with_an_embeddings_model(
    valkey: Any, tmp_path: Any, llm: Any
) -> None:
    from tests.conftest import make_settings

    settings = make_settings(
        valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="k", embed_model="test-embed"
    )
    async with running_stack(settings) as stack:
        await ingest(stack)
        embedded_before = llm.stats.embedding_requests
        job_id = (await stack.client.ask("How long do I brew green tea?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        stages = [e.data["stage"] for e in events if e.type == "status"]
        assert stages == ["embedding", "retrieving", "generating"]
        assert llm.stats.embedding_requests == embedded_before + 1  # the question's embedding
        done = events[-1].data
        assert done["providers"]["retrieval"].startswith("hybrid")
        assert "embedding" in done["timings"]
        sources = next(e.data["sources"] for e in events if e.type == "sources")
        assert sources[0]["title"] == "Tea"


async def test_a_streams_life_is_capped_and_it_resumes(settings: Any) -> None:
    settings.sse_max_duration = 1.0
    async with running_stack(settings, with_worker=False) as stack:
        job_id = (await stack.client.ask("anyone there?"))["job_id"]
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
            response = await http.get(f"/jobs/{job_id}/events")  # reads to the end
        assert response.status_code == 200
        assert 0.9 < time.monotonic() - started < 5, "closed by the cap, not by the job"


async def test_a_provider_refusal_fails_the_job_with_a_readable_error(
    valkey: Any, tmp_path: Any, llm: Any
) -> None:
    from tests.conftest import make_settings

    # A path the server does not serve: HTTP 404, which no retry can mend.
    settings = make_settings(valkey, tmp_path, llm_base_url=f"{llm.base_url}/nope", llm_api_key="k")
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        assert events[-1].type == "error"
        assert "HTTP 404" in events[-1].data["message"]
        view = await stack.client.job(job_id)
        assert view["status"] == "failed" and "HTTP 404" in view["error"]
        assert view["attempt"] == 1, "a refusal is not retried"


async def test_a_transient_failure_is_retried_and_each_attempt_announced(
    valkey: Any, tmp_path: Any
) -> None:
    from rag_async.local.valkey import free_port
    from tests.conftest import make_settings

    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: a connection error
    settings = make_settings(
        valkey, tmp_path, llm_base_url=closed, llm_api_key="k", job_max_tries=2
    )
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        attempts = [e.data["attempt"] for e in events if e.type == "status"]
        assert attempts[0] == 1 and attempts[-1] == 2
        assert events[-1].type == "error" and "could not be reached" in events[-1].data["message"]
        assert (await stack.client.job(job_id))["attempt"] == 2


async def test_stats_tell_workers_load_and_failures(valkey: Any, tmp_path: Any, llm: Any) -> None:
    from tests.conftest import make_settings

    settings = make_settings(valkey, tmp_path, llm_base_url=f"{llm.base_url}/nope", llm_api_key="k")
    async with running_stack(settings) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        stats = (await http.get("/stats")).json()
        assert [w["in_flight"] for w in stats["workers"]] == [0]  # the one worker, idle
        assert stats["queue_depth"] == 0 and stats["jobs_in_flight"] == 0
        job_id = (await stack.client.ask("tea?"))["job_id"]
        [event async for event in stack.client.follow(job_id)]  # fails: the LLM says 404
        failures = (await http.get("/stats")).json()["recent_failures"]
        assert failures[0]["job_id"] == job_id and "HTTP 404" in failures[0]["error"]


async def test_a_queued_job_shows_its_place_in_the_queue(settings: Any) -> None:
    async with running_stack(settings, with_worker=False) as stack:  # nothing takes them
        jobs = [(await stack.client.ask(f"question {i}"))["job_id"] for i in range(3)]
        positions = [(await stack.client.job(job_id))["queue_position"] for job_id in jobs]
        assert positions == [1, 2, 3]
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            assert (await http.get("/stats")).json()["queue_depth"] == 3


async def test_a_stalled_or_trickling_llm_fails_in_seconds(
    valkey: Any, tmp_path: Any, llm: Any
) -> None:
    from tests.conftest import make_settings

    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="k",
        job_max_tries=1,
        llm_first_token_timeout=0.5,
        llm_idle_timeout=0.5,
    )
    async with running_stack(settings) as stack:
        # No first token for 30 s: the first-token timeout ends the attempt.
        llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 30.0, 5, 100
        started = time.monotonic()
        job_id = (await stack.client.ask("tea?"))["job_id"]
        last = [event async for event in stack.client.follow(job_id)][-1]
        assert last.type == "error" and "first token within 0.5 s" in last.data["message"]
        assert time.monotonic() - started < 5
        # A token, then nothing for 10 s: the idle timeout.
        llm.config.ttft, llm.config.tokens, llm.config.tokens_per_second = 0.0, 5, 0.1
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        assert "token" in [event.type for event in events]
        assert events[-1].type == "error" and "idle timeout" in events[-1].data["message"]


async def test_the_client_follows_through_keep_alives(settings: Any, llm: Any) -> None:
    settings.sse_ping_interval = 1.0
    llm.config.ttft, llm.config.tokens = 2.5, 5  # two pings before the first token
    async with running_stack(settings) as stack:
        job_id = (await stack.client.ask("tea?"))["job_id"]
        events = [event async for event in stack.client.follow(job_id)]
        assert events[-1].type == "done" and events[-1].data["answer"] == expected_answer(5)
