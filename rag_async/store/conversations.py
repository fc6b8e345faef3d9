"""Conversations: the turns of a series of questions, so that a follow-up can lean on the ones
before it.

A conversation is one Redis hash (keys.py): its owner, when it began, and a field per turn
("turn:<job id>", JSON), written by the worker when a question's answer is complete. Keyed by
job id, so a job that arq runs twice still adds one turn. It lives as long as a result
(RAG_RESULT_TTL), from its latest write; another key's conversation is not found, like one that
never existed.

What a question carries of its conversation is fixed when it is asked: the latest turns that fit
`HISTORY_TOKENS` (`recent_turns`, the one place that budget is kept), in its job record; the
prompt (llm/prompt.py) gives the LLM those turns before the question. The retrieval query of a
follow-up is the question with the previous question's key words before it (`search_query`),
so that "and at what temperature?" still finds the passages about what was asked before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import orjson
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from rag_async.domain.identity import Principal
from rag_async.store.keys import Keys

_TURN = "turn:"
_WORD = re.compile(r"\w+")
# Tokens as parsing.chunking.count_tokens counts them (words and punctuation marks), without
# importing retrieval (and Qdrant's client) into the API process.
_TOKEN = re.compile(r"\w+|[^\w\s]")
# The earlier turns' share of a prompt: a few exchanges, well below any model's context with
# the sources, which stay the larger part.
HISTORY_TOKENS = 1000

# KEYS: the conversation's hash. ARGV: the caller's name, '1' if an admin, now, the TTL.
# Another key's conversation is answered with nothing and left as it was: neither begun nor
# kept alive by a caller who may not join it. Else it is begun if new, and lives on.
_JOIN = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and ARGV[2] ~= '1' then return false end
redis.call('HSETNX', KEYS[1], 'owner', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""


class Turn(BaseModel):
    """One question and its answer, as a later question's prompt carries it."""

    model_config = ConfigDict(frozen=True)

    question: str
    answer: str


class StoredTurn(Turn):
    job_id: str
    search_query: str | None = None
    answered_at: float | None = None


class Conversation(BaseModel):
    conversation_id: str
    owner: str | None = None
    created_at: float | None = None
    turns: list[StoredTurn] = []


class Conversations:
    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._join = redis.register_script(_JOIN)

    async def join(self, conversation_id: str, caller: Principal) -> Conversation | None:
        """The caller's conversation `conversation_id`, begun now if there is none; None when
        it is another key's (whose conversation is left untouched: not even its lifetime is
        renewed)."""
        key = self._keys.conversation(conversation_id)
        admin = "1" if caller.admin else "0"
        args: list[str | int] = [caller.name, admin, f"{time.time():.6f}", self._ttl]
        flat = await self._join(keys=[key], args=args)
        if flat is None:
            return None
        return _parsed(conversation_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def get(self, conversation_id: str) -> Conversation | None:
        raw = await self._redis.hgetall(self._keys.conversation(conversation_id))  # type: ignore[misc]
        return _parsed(conversation_id, raw) if raw else None

    async def add_turn(self, conversation_id: str, turn: StoredTurn) -> None:
        """Keep a finished turn (again, harmlessly, if the job runs twice)."""
        key = self._keys.conversation(conversation_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, f"{_TURN}{turn.job_id}", turn.model_dump_json())
            pipe.expire(key, self._ttl)
            await pipe.execute()


def _parsed(conversation_id: str, raw: dict[bytes, bytes]) -> Conversation:
    fields = {k.decode(): v for k, v in raw.items()}
    turns = [
        StoredTurn.model_validate(orjson.loads(value))
        for name, value in fields.items()
        if name.startswith(_TURN)
    ]
    turns.sort(key=lambda turn: turn.answered_at or 0.0)
    created = fields.get("created_at")
    owner = fields.get("owner")
    return Conversation(
        conversation_id=conversation_id,
        owner=owner.decode() if owner is not None else None,
        created_at=float(created) if created else None,
        turns=turns,
    )


def recent_turns(turns: Sequence[Turn], budget: int = HISTORY_TOKENS) -> list[Turn]:
    """The latest turns whose questions and answers fit `budget` tokens together, in order. A
    turn is kept whole or not at all: half an answer would read as the whole of it."""
    kept: list[Turn] = []
    left = budget
    for turn in reversed(turns):
        cost = len(_TOKEN.findall(turn.question)) + len(_TOKEN.findall(turn.answer))
        if cost > left:
            break
        left -= cost
        kept.append(Turn(question=turn.question, answer=turn.answer))
    return kept[::-1]


def search_query(question: str, history: Sequence[Turn], terms: Callable[[str], list[str]]) -> str:
    """What retrieval looks for: the question, after the previous question's key words that it
    does not already hold (`terms`: the lexical encoder's, so stopwords are no key words)."""
    if not history:
        return question
    own = set(terms(question))
    words: list[str] = []
    for word in _WORD.findall(history[-1].question):
        found = terms(word)
        if found and not own.issuperset(found):
            own.update(found)
            words.append(word)
    return " ".join([*words, question]) if words else question
