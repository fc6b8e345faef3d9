"""A conversation's second message while the first is still answering (double-texting): the
`multitask` choice of POST /chat (reject, enqueue, interrupt, rollback), against the real app,
worker, Valkey and the test LLM server streaming slowly, so that the first is still answering
when the second is asked."""

from __future__ import annotations

from typing import Any

import httpx
from redis.asyncio import Redis

from rag_async.domain.identity import LOCAL
from rag_async.store.conversations import Conversations
from rag_async.store.keys import Keys
from tests.conftest import Stack, ingest
from tests.support.openai_server import expected_answer

FIRST, SECOND = "How long do I brew green tea?", "And black tea?"
SLOW_TOKENS = 40  # at 10 a second: the first answer streams for about 4 s


def _slow(llm: Any) -> None:
    llm.config.tokens, llm.config.tokens_per_second = SLOW_TOKENS, 10


def _spoken(llm: Any) -> list[tuple[str, str]]:
    """The roles and texts of the LLM's latest request, the system prompt left out."""
    messages = llm.stats.last_chat_request["messages"]
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


async def _ask(stack: Stack, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        response = await http.post("/chat", json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _streaming(stack: Stack, job_id: str) -> None:
    """Return once the job has streamed its first tokens."""
    async for event in stack.client.follow(job_id):
        assert event.type != "done", "the first answer ended before the second was asked"
        if event.type == "token":
            return


async def _last_event(stack: Stack, job_id: str) -> str:
    events = [event async for event in stack.client.follow(job_id)]
    return events[-1].type


async def _conversation(stack: Stack, conversation_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.get(f"/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    conversation: dict[str, Any] = response.json()
    return conversation


async def test_enqueue_runs_after_the_first_with_its_answer(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    _slow(llm)
    first = await _ask(stack, {"query": FIRST, "conversation_id": "queued"})
    second = await _ask(stack, {"query": SECOND, "conversation_id": "queued"})  # the default

    assert await _last_event(stack, second["job_id"]) == "done"
    one, two = (await stack.client.job(first["job_id"]), await stack.client.job(second["job_id"]))
    assert one["status"] == "complete"
    assert two["started_at"] >= one["finished_at"], "the second ran after the first had ended"
    # Waiting (deferred every half second for ~4 s: more often than its 3 tries) spent no
    # try, and started no attempt.
    assert two["status"] == "complete" and two["attempt"] == 1
    spoken = _spoken(llm)  # the second's prompt: the first's whole answer before it
    assert spoken[:2] == [("user", FIRST), ("assistant", expected_answer(SLOW_TOKENS))]
    turns = (await _conversation(stack, "queued"))["turns"]
    assert [(t["question"], t["interrupted"]) for t in turns] == [(FIRST, False), (SECOND, False)]
    assert (await _conversation(stack, "queued"))["answering"] == []


async def test_interrupt_keeps_the_partial_answer_in_the_history(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    _slow(llm)
    first = await _ask(stack, {"query": FIRST, "conversation_id": "cut"})
    await _streaming(stack, first["job_id"])
    body = {"query": SECOND, "conversation_id": "cut", "multitask": "interrupt"}
    second = await _ask(stack, body)

    assert await _last_event(stack, first["job_id"]) == "cancelled"
    assert await _last_event(stack, second["job_id"]) == "done"
    turns = (await _conversation(stack, "cut"))["turns"]
    assert [(t["question"], t["interrupted"]) for t in turns] == [(FIRST, True), (SECOND, False)]
    partial = turns[0]["answer"]
    whole = expected_answer(SLOW_TOKENS)
    assert partial and whole.startswith(partial) and len(partial) < len(whole), partial
    assert _spoken(llm)[:2] == [("user", FIRST), ("assistant", partial)]  # the second's prompt


async def test_rollback_leaves_nothing_of_the_first(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    _slow(llm)
    first = await _ask(stack, {"query": FIRST, "conversation_id": "undo"})
    await _streaming(stack, first["job_id"])
    body = {"query": SECOND, "conversation_id": "undo", "multitask": "rollback"}
    second = await _ask(stack, body)

    assert await _last_event(stack, first["job_id"]) == "cancelled"
    assert await _last_event(stack, second["job_id"]) == "done"
    turns = (await _conversation(stack, "undo"))["turns"]
    assert [t["question"] for t in turns] == [SECOND]
    spoken = _spoken(llm)  # the second's prompt: its question alone
    assert len(spoken) == 1 and spoken[0][1].endswith(f"Question: {SECOND}")


async def test_reject_refuses_while_the_first_answers(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    _slow(llm)
    first = await _ask(stack, {"query": FIRST, "conversation_id": "busy"})
    body = {"query": SECOND, "conversation_id": "busy", "multitask": "reject"}
    refused = await _ask(stack, body, status=409)
    assert refused["error"]["code"] == "conversation_busy"
    assert first["job_id"] in refused["error"]["message"]
    assert (await _conversation(stack, "busy"))["answering"] == [first["job_id"]]

    assert await _last_event(stack, first["job_id"]) == "done"  # the first was left alone
    second = await _ask(stack, body)  # once it has ended, the same question is taken
    assert await _last_event(stack, second["job_id"]) == "done"
    turns = (await _conversation(stack, "busy"))["turns"]
    assert [t["question"] for t in turns] == [FIRST, SECOND]


async def test_a_question_whose_job_is_gone_blocks_nobody(stack: Stack) -> None:
    """A question in the answering set whose job record has expired (say its worker was
    killed and nothing ran it again) does not hold the conversation: the next one runs."""
    await ingest(stack)
    keys = Keys(stack.settings.key_prefix)
    async with Redis.from_url(stack.settings.redis_url or "") as redis:
        conversations = Conversations(redis, keys, stack.settings.result_ttl)
        await conversations.join("orphan", LOCAL, "job-that-expired")
        asked = await _ask(stack, {"query": FIRST, "conversation_id": "orphan"})
        assert await _last_event(stack, asked["job_id"]) == "done"
        assert (await conversations.get("orphan")).answering == []  # type: ignore[union-attr]
