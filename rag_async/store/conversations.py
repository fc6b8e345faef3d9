"""Conversations: the turns of a series of questions, so that a follow-up can lean on the ones
before it.

A conversation is one Redis hash (keys.py): its owner, when it began, and a field per turn
("turn:<job id>", JSON), written by the worker when a question's answer is complete. Keyed by
job id, so a job that arq runs twice still adds one turn. It lives as long as a result
(RAG_RESULT_TTL), from its latest write; another key's conversation is not found, like one that
never existed.

A question's history is the latest turns that fit `HISTORY_TOKENS` (`recent_turns`, the one
place that budget is kept), read by its worker when the answer starts (so that it holds the
answer of a question asked just before it); the prompt (llm/prompt.py) gives the LLM those
turns before the question. The retrieval query of a follow-up is the question with the previous
question's key words before it (`search_query`), so that "and at what temperature?" still finds
the passages about what was asked before.

A second question asked while the first is still answering (double-texting) is ordered by the
conversation's answering set (keys.py `answering`): every question joins it in the step that
joins the conversation, and leaves it when its job ends, whichever way (worker/ends.py). Its
`multitask` choice (worker/answering.py) rejects it, queues it after the ones before it, or
cancels them first: `interrupt` keeps what they had answered as a turn marked `interrupted`,
`rollback` leaves no turn of theirs (`mark` records which, in the same hash, so that a turn
written by a job finishing at that very moment obeys it too).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Literal

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

# KEYS: the conversation's hash, its answering set. ARGV: the caller's name, '1' if an admin,
# now, the TTL, the job id of the question joining ('' for none). Another key's conversation is
# answered with nothing and left as it was: neither begun nor kept alive by a caller who may not
# join it. Else it is begun if new, and lives on; the question joins the answering set after
# those still in it, which are returned with the hash: whoever asks next sees this one.
_JOIN = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and ARGV[2] ~= '1' then return false end
redis.call('HSETNX', KEYS[1], 'owner', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local before = redis.call('ZRANGE', KEYS[2], 0, -1)
if ARGV[5] ~= '' and not redis.call('ZSCORE', KEYS[2], ARGV[5]) then
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('ZADD', KEYS[2], (tonumber(last[2]) or 0) + 1, ARGV[5])
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
return {redis.call('HGETALL', KEYS[1]), before}
"""

# KEYS: the conversation's hash. ARGV: the turn's field, its JSON, the TTL, '1' to keep a turn
# already there (an interrupted turn never overwrites the whole answer of a job that finished),
# the field of its job's mark. A rolled-back job's turn is not kept.
# A conversation deleted (or expired) meanwhile is not brought back, ownerless, by a turn.
_ADD_TURN = """
if redis.call('HEXISTS', KEYS[1], 'owner') == 0 then return 0 end
if redis.call('HGET', KEYS[1], ARGV[5]) == 'rolled_back' then return 0 end
if ARGV[4] == '1' then
  if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the conversation's hash. ARGV: the field, its value, the TTL. Only a conversation
# that still exists: a write must not begin an ownerless one.
_SET_IF_KEPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# How a question still answering was ended by the next one (`mark`).
Mark = Literal["interrupted", "rolled_back"]
_MARK = "ended:"


class Turn(BaseModel):
    """One question and its answer, as a later question's prompt carries it."""

    model_config = ConfigDict(frozen=True)

    question: str
    answer: str


class StoredTurn(Turn):
    job_id: str
    search_query: str | None = None
    answered_at: float | None = None
    # Cancelled by the next question (`multitask: interrupt`): `answer` is what it had said.
    interrupted: bool = False


class Conversation(BaseModel):
    conversation_id: str
    owner: str | None = None
    created_at: float | None = None
    turns: list[StoredTurn] = []
    metadata: dict[str, str] = {}  # a client's labels (OpenAI's Conversations API)
    # The jobs of its questions that had not ended (as far as the answering set knew), in the
    # order asked; joining, the ones before the question that joined.
    answering: list[str] = []


class Conversations:
    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._join = redis.register_script(_JOIN)
        self._add_turn = redis.register_script(_ADD_TURN)
        self._set_if_kept = redis.register_script(_SET_IF_KEPT)

    async def join(
        self, conversation_id: str, caller: Principal, job_id: str | None = None
    ) -> Conversation | None:
        """The caller's conversation `conversation_id`, begun now if there is none, with the
        question of `job_id` joined to its answering set (and `answering` the ones before
        it); None when it is another key's (whose conversation is left untouched: not even
        its lifetime is renewed)."""
        keys = [self._keys.conversation(conversation_id), self._keys.answering(conversation_id)]
        admin = "1" if caller.admin else "0"
        args: list[str | int] = [caller.name, admin, f"{time.time():.6f}", self._ttl, job_id or ""]
        joined = await self._join(keys=keys, args=args)
        if joined is None:
            return None
        flat, before = joined
        conversation = _parsed(conversation_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        conversation.answering = [member.decode() for member in before if member.decode() != job_id]
        return conversation

    async def get(self, conversation_id: str) -> Conversation | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._keys.conversation(conversation_id))
            pipe.zrange(self._keys.answering(conversation_id), 0, -1)
            raw, answering = await pipe.execute()
        if not raw:
            return None
        conversation = _parsed(conversation_id, raw)
        conversation.answering = [member.decode() for member in answering]
        return conversation

    async def add_turn(self, conversation_id: str, turn: StoredTurn) -> bool:
        """Keep a finished turn (again, harmlessly, if the job runs twice); an interrupted one
        only if the job has no turn yet. Nothing of a rolled-back job is kept. True if kept."""
        keep_first = "1" if turn.interrupted else "0"
        args: list[str | int] = [
            f"{_TURN}{turn.job_id}",
            turn.model_dump_json(),
            self._ttl,
            keep_first,
            f"{_MARK}{turn.job_id}",
        ]
        kept = await self._add_turn(keys=[self._keys.conversation(conversation_id)], args=args)
        return bool(kept)

    async def set_metadata(self, conversation_id: str, metadata: dict[str, str]) -> bool:
        """Replace its metadata; False if it no longer exists."""
        args: list[str | bytes | int] = ["metadata", orjson.dumps(metadata), self._ttl]
        key = self._keys.conversation(conversation_id)
        return bool(await self._set_if_kept(keys=[key], args=args))

    async def remove_turn(self, conversation_id: str, job_id: str) -> bool:
        """Forget the turn of `job_id`; False if there was none."""
        removed = await self._redis.hdel(
            self._keys.conversation(conversation_id), f"{_TURN}{job_id}"
        )  # type: ignore[misc]
        return bool(removed)

    async def delete(self, conversation_id: str) -> None:
        """Forget it all. A question of it still answering keeps no turn (`_ADD_TURN`)."""
        key = self._keys.conversation(conversation_id)
        await self._redis.delete(key, self._keys.answering(conversation_id))

    async def answering_before(self, conversation_id: str, job_id: str) -> list[str]:
        """The jobs of the questions asked before `job_id`'s that had not ended when last
        seen, in order; none if `job_id` is not in the answering set (asked before it
        existed, or ended)."""
        members = await self._redis.zrange(self._keys.answering(conversation_id), 0, -1)
        ids = [member.decode() for member in members]
        return ids[: ids.index(job_id)] if job_id in ids else []

    async def finished(self, conversation_id: str, job_id: str) -> None:
        """The job of a question has ended (or expired): the questions after it stop waiting
        for it."""
        await self._redis.zrem(self._keys.answering(conversation_id), job_id)

    async def mark(self, conversation_id: str, job_id: str, how: Mark) -> None:
        """The question of `job_id` is being cancelled by the next one: `interrupted` (its
        partial answer will be kept as its turn) or `rolled_back` (its turn, if it managed
        to write one, is removed now, and none is kept later)."""
        key = self._keys.conversation(conversation_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, f"{_MARK}{job_id}", how)
            if how == "rolled_back":
                pipe.hdel(key, f"{_TURN}{job_id}")
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def marked(self, conversation_id: str, job_id: str) -> Mark | None:
        """How the next question ended `job_id`'s, if it did."""
        how = await self._redis.hget(self._keys.conversation(conversation_id), f"{_MARK}{job_id}")  # type: ignore[misc]
        if how == b"interrupted":
            return "interrupted"
        return "rolled_back" if how == b"rolled_back" else None


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
    metadata = fields.get("metadata")
    return Conversation(
        conversation_id=conversation_id,
        owner=owner.decode() if owner is not None else None,
        created_at=float(created) if created else None,
        turns=turns,
        metadata=orjson.loads(metadata) if metadata else {},
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
