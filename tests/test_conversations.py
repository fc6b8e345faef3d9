"""Conversations: a follow-up's prompt carries the turns before it and its search what the
previous question was about; `conversation_id` on POST /chat, `previous_response_id` on
/v1/responses, the messages of /v1/chat/completions; GET /conversations/{id}, the key's own.
Against the real app, worker, Valkey and the test LLM server (which records its requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
from redis.asyncio import Redis

from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.retrieval import LexicalEncoder
from rag_async.store.conversations import Turn, recent_turns, search_query
from tests.conftest import Stack, ingest, keyed_settings, make_settings, running_stack
from tests.support.openai_server import expected_answer

FIRST, FOLLOW_UP = "How long do I brew green tea?", "And black tea?"


def _spoken(llm: Any) -> list[tuple[str, str]]:
    """The roles and texts of the LLM's latest request, the system prompt left out."""
    messages = llm.stats.last_chat_request["messages"]
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


async def _answered(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        response = await http.post("/chat", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    events = [event async for event in stack.client.follow(accepted["job_id"])]
    assert events[-1].type == "done", events[-1]
    return accepted


async def test_a_follow_up_leans_on_the_question_before_it(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    first = await _answered(stack, {"query": FIRST, "conversation_id": "tea-talk"})
    assert first["conversation_id"] == "tea-talk"
    assert _spoken(llm)[0][0] == "user" and len(_spoken(llm)) == 1  # nothing came before
    await _answered(stack, {"query": FOLLOW_UP, "conversation_id": "tea-talk"})

    spoken = _spoken(llm)
    assert spoken[:2] == [("user", FIRST), ("assistant", expected_answer(12))]
    assert spoken[2][0] == "user" and spoken[2][1].endswith(f"Question: {FOLLOW_UP}")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        conversation = (await http.get("/conversations/tea-talk")).json()
    turns = conversation["turns"]
    assert [t["question"] for t in turns] == [FIRST, FOLLOW_UP]
    assert turns[0]["search_query"] is None  # a first question is searched as asked
    # The follow-up was searched with the first question's key words before it.
    assert turns[1]["search_query"] == f"long brew green {FOLLOW_UP}"
    assert turns[1]["answer"] == expected_answer(12)
    job = await stack.client.job(turns[1]["job_id"])
    assert "80 degrees" in "".join(s["text"] for s in job["sources"])  # the green tea passage
    assert job["conversation_id"] == "tea-talk"  # a job's view names its conversation

    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        assert (await http.get("/conversations/never-begun")).status_code == 404
        bad = await http.post("/chat", json={"query": "tea?", "conversation_id": "no spaces"})
        assert bad.status_code == 422


async def test_offline_answer_of_a_follow_up_quotes_what_it_follows(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    async with running_stack(make_settings(valkey, tmp_path)) as stack:  # no LLM: extractive
        await ingest(stack)
        await _answered(stack, {"query": "How long do I brew green tea?", "conversation_id": "c"})
        follow = await _answered(
            stack, {"query": "And at what temperature?", "conversation_id": "c"}
        )
        answer = (await stack.client.job(follow["job_id"]))["answer"]
    assert "80 degrees Celsius" in answer, answer


ALICE, BOB = "alice-secret-0123456789", "bob-secret-0123456789"


async def test_a_conversation_is_its_keys_own(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE, "bob": BOB}, admins={})
    async with running_stack(settings) as stack:
        alice = httpx.AsyncClient(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {ALICE}"}
        )
        bob = httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {BOB}"})
        async with alice, bob:
            asked = await alice.post("/chat", json={"query": "tea?", "conversation_id": "mine"})
            assert asked.status_code == 202
            assert (await alice.get("/conversations/mine")).status_code == 200
            assert (await bob.get("/conversations/mine")).status_code == 404
            joined = await bob.post("/chat", json={"query": "tea?", "conversation_id": "mine"})
            assert joined.status_code == 404
            async with httpx.AsyncClient(base_url=stack.base_url) as nobody:
                assert (await nobody.get("/conversations/mine")).status_code == 401


async def test_another_keys_probe_leaves_a_conversation_as_it_was(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """A probe with another key's conversation id is a 404 that writes nothing: the owner's
    conversation keeps the lifetime it had, and nothing is begun in its name."""
    settings = keyed_settings(valkey, tmp_path, llm, users={"alice": ALICE, "bob": BOB}, admins={})
    key = f"{settings.key_prefix}conversation:mine"
    async with (
        running_stack(settings, with_worker=False) as stack,
        Redis.from_url(settings.redis_url or "") as redis,
    ):
        alice = httpx.AsyncClient(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {ALICE}"}
        )
        bob = httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {BOB}"})
        async with alice, bob:
            asked = await alice.post("/chat", json={"query": "tea?", "conversation_id": "mine"})
            assert asked.status_code == 202
            await redis.expire(key, 120)
            before = await redis.hgetall(key)  # type: ignore[misc]
            for _ in range(3):
                joined = await bob.post("/chat", json={"query": "?", "conversation_id": "mine"})
                assert joined.status_code == 404
            assert 0 < await redis.ttl(key) <= 120
            assert await redis.hgetall(key) == before  # type: ignore[misc]
            # The owner's own question still renews it.
            again = await alice.post("/chat", json={"query": "tea?", "conversation_id": "mine"})
            assert again.status_code == 202
            assert await redis.ttl(key) > 120


async def test_previous_response_id_and_chat_messages_carry_the_conversation(
    stack: Stack, llm: Any
) -> None:
    await ingest(stack)
    async with openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="x") as client:
        first = await client.responses.create(input=FIRST)
        assert first.status == "completed"
        second = await client.responses.create(input=FOLLOW_UP, previous_response_id=first.id)
        assert second.status == "completed"
        assert _spoken(llm)[:2] == [("user", FIRST), ("assistant", first.output_text)]
        third = await client.responses.create(input="Why?", previous_response_id=second.id)
        assert third.status == "completed"
        assert [text for role, text in _spoken(llm)[:4] if role == "user"] == [FIRST, FOLLOW_UP]

        await client.responses.create(
            input=[
                {"role": "user", "content": FIRST},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Long."}]},
                {"role": "user", "content": [{"type": "input_text", "text": FOLLOW_UP}]},
            ]
        )
        assert _spoken(llm)[:2] == [("user", FIRST), ("assistant", "Long.")]

        await client.chat.completions.create(
            model="any",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": FIRST},
                {"role": "assistant", "content": "Two minutes."},
                {"role": "user", "content": FOLLOW_UP},
            ],
        )
        spoken = _spoken(llm)
        assert spoken[:2] == [("user", FIRST), ("assistant", "Two minutes.")]
        assert spoken[2][1].endswith(f"Question: {FOLLOW_UP}")
        # The system message is the client's instructions: after the service's own system
        # prompt (which keeps the answer grounded), never instead of it.
        sent = llm.stats.last_chat_request["messages"]
        assert sent[0]["role"] == "system" and "only the numbered sources" in sent[0]["content"]
        assert sent[1] == {"role": "system", "content": "Be brief."}


def test_the_history_is_the_latest_turns_within_the_budget() -> None:
    turns = [Turn(question=f"question {i}?", answer="word " * 100) for i in range(30)]
    kept = recent_turns(turns)
    assert kept == turns[-len(kept) :] and 0 < len(kept) < 30
    assert sum(len(t.answer.split()) + 3 for t in kept) <= 1000
    assert recent_turns([Turn(question="q", answer="word " * 5000)]) == []  # never half a turn


def test_search_query_prepends_the_previous_questions_key_words() -> None:
    terms = LexicalEncoder().terms
    history = [Turn(question="How long do I brew green tea?", answer="Two minutes.")]
    assert search_query("And black tea?", history, terms) == "long brew green And black tea?"
    assert search_query("How long to brew green tea?", history, terms) == (
        "How long to brew green tea?"
    )
    assert search_query("And black tea?", [], terms) == "And black tea?"
