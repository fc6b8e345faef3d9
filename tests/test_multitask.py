"""A conversation's second message while the first is still answering (double-texting): the
`multitask` choice of POST /chat and POST /v1/responses (reject, enqueue, interrupt, rollback),
against the real app, worker, Valkey and the test LLM server streaming slowly, so that the
first is still answering when the second is asked."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import httpx
import openai
import pytest
from redis.asyncio import Redis

from rag_async.api.openai_compat.wire import RESPONSE_PREFIX
from rag_async.domain.identity import LOCAL
from rag_async.store.conversations import Conversations
from rag_async.store.keys import Keys
from tests.conftest import Stack, ingest
from tests.support.openai_server import expected_answer

FIRST, SECOND = "How long do I brew green tea?", "And black tea?"
SLOW_TOKENS = 40  # at 10 a second: the first answer streams for about 4 s


def _slow(llm: Any, tokens_per_second: float = 10) -> None:
    """Stream answers slowly: the first is still answering when the second is asked (at 5 a
    second, with 8 s to spare for a test that cuts it short on a busy machine)."""
    llm.config.tokens, llm.config.tokens_per_second = SLOW_TOKENS, tokens_per_second


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
    """Return once the job has streamed its first tokens (the stream closed, not left to the
    garbage collector after its client has gone)."""
    async with aclosing(stack.client.follow(job_id)) as events:
        async for event in events:
            assert event.type != "done", "the first answer ended before the second was asked"
            if event.type == "token":
                return
    raise AssertionError(f"job {job_id} ended without streaming")


async def _last_event(stack: Stack, job_id: str) -> str:
    events = [event async for event in stack.client.follow(job_id)]
    return events[-1].type


async def _nobody_answering(stack: Stack, conversation_id: str) -> None:
    """Wait (boundedly) until the conversation's questions have all left its answering set:
    a job's end leaves it just after its last event, which a client may see first."""
    for _ in range(100):
        if not (await _conversation(stack, conversation_id))["answering"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"conversation {conversation_id} still answering")


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
    await _nobody_answering(stack, "queued")


async def test_interrupt_keeps_the_partial_answer_in_the_history(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    _slow(llm, tokens_per_second=5)
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
    _slow(llm, tokens_per_second=5)
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
        await _nobody_answering(stack, "orphan")  # the orphan left it too


# /v1/responses: `multitask` sent with the openai SDK's `extra_body`, on a response that
# continues one still answering (`previous_response_id`) or a conversation (`conversation`).


def _job_id(response_id: str) -> str:
    return response_id.removeprefix(RESPONSE_PREFIX)


async def test_v1_a_follow_up_of_a_response_still_answering(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    _slow(llm)
    async with openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="x") as client:
        first = await client.responses.create(input=FIRST, background=True)
        with pytest.raises(openai.ConflictError) as refused:
            await client.responses.create(
                input=SECOND, previous_response_id=first.id, extra_body={"multitask": "reject"}
            )
        assert refused.value.code == "conversation_busy"
        assert _job_id(first.id) in refused.value.message

        # enqueue (the default): it waits for the first, and its prompt has the whole answer.
        second = await client.responses.create(input=SECOND, previous_response_id=first.id)
        assert second.status == "completed"
        done = await client.responses.retrieve(first.id)
        assert done.status == "completed"
        assert _spoken(llm)[:2] == [("user", FIRST), ("assistant", done.output_text)]

        # interrupt: the fourth cuts the third short, and leans on what it had said.
        _slow(llm, tokens_per_second=5)
        third = await client.responses.create(
            input="Why?", previous_response_id=second.id, background=True
        )
        await _streaming(stack, _job_id(third.id))
        fourth = await client.responses.create(
            input="Really?", previous_response_id=third.id, extra_body={"multitask": "interrupt"}
        )
        assert fourth.status == "completed"
        assert (await client.responses.retrieve(third.id)).status == "cancelled"
        spoken = _spoken(llm)
        assert [text for role, text in spoken[:6:2]] == [FIRST, SECOND, "Why?"]
        partial = spoken[5][1]
        assert spoken[5][0] == "assistant" and partial, spoken
        assert expected_answer(SLOW_TOKENS).startswith(partial) and partial != done.output_text

        # rollback: the fifth is cancelled and nothing of it is in the sixth's prompt.
        fifth = await client.responses.create(
            input="Sure?", previous_response_id=fourth.id, background=True
        )
        await _streaming(stack, _job_id(fifth.id))
        sixth = await client.responses.create(
            input="Well?", previous_response_id=fifth.id, extra_body={"multitask": "rollback"}
        )
        assert sixth.status == "completed"
        assert (await client.responses.retrieve(fifth.id)).status == "cancelled"
        asked = [text for role, text in _spoken(llm) if role == "user"]
        assert "Sure?" not in " ".join(asked[:-1]) and asked[-1].endswith("Question: Well?")
        assert asked[:-1] == [FIRST, SECOND, "Why?", "Really?"]


async def test_v1_conversation_interrupt(stack: Stack, llm: Any) -> None:
    await ingest(stack)
    _slow(llm, tokens_per_second=5)
    first = await _ask(stack, {"query": FIRST, "conversation_id": "both"})
    await _streaming(stack, first["job_id"])
    async with openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="x") as client:
        second = await client.responses.create(
            input=SECOND, extra_body={"conversation": "both", "multitask": "interrupt"}
        )
    assert second.status == "completed"
    assert second.conversation is not None and second.conversation.id == "both"
    turns = (await _conversation(stack, "both"))["turns"]
    assert [(t["question"], t["interrupted"]) for t in turns] == [(FIRST, True), (SECOND, False)]
    assert _spoken(llm)[:2] == [("user", FIRST), ("assistant", turns[0]["answer"])]


async def test_a_question_cancelled_while_it_waits_frees_the_conversation(
    stack: Stack, llm: Any
) -> None:
    await ingest(stack)
    _slow(llm)
    first = await _ask(stack, {"query": FIRST, "conversation_id": "gone"})
    second = await _ask(stack, {"query": SECOND, "conversation_id": "gone"})
    await _streaming(stack, first["job_id"])
    assert (await stack.client.cancel(second["job_id"]))["status"] in ("cancelled", "cancelling")
    assert await _last_event(stack, second["job_id"]) == "cancelled"
    assert await _last_event(stack, first["job_id"]) == "done"
    assert [t["question"] for t in (await _conversation(stack, "gone"))["turns"]] == [FIRST]
    await _nobody_answering(stack, "gone")
