"""Answer one question: retrieve, stream the LLM, and tell the story as events. The job's
life around this work (attempts, retries, the end) is jobs/lifecycle.py's."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence

from rag_async.domain.events import SourcesEvent, TokenEvent
from rag_async.domain.generation import GenerationReport
from rag_async.domain.job import JobRecord
from rag_async.domain.sources import Source
from rag_async.providers.breaker import guarded_stream
from rag_async.providers.llm import screen
from rag_async.providers.retrieval import LexicalEncoder
from rag_async.store.conversations import StoredTurn, Turn, recent_turns, search_query
from rag_async.worker.answering import WAIT_POLL, followed_turns, waits_for_earlier
from rag_async.worker.jobs.retrieval import Lookup, first_stage, retrieval_providers, retrieve
from rag_async.worker.lifecycle import Finished, JobSpec, Run
from rag_async.worker.services import Services

# Only its tokenizer: the key words of a follow-up's search (conversations.search_query).
_LEXICAL = LexicalEncoder()


async def _answer(run: Run) -> Finished:
    services, record = run.services, run.record
    question, history = record.query or "", await _history(services, record)
    # A response that followed one still answering keeps the history it resolved (the one
    # it followed has ended): a later try, or a response that follows this one, reads it.
    resolved = {"history": history, "follows": None} if record.follows else {}
    query = search_query(question, history, _LEXICAL.terms)
    collection = record.collection or services.settings.default_collection
    lookup = Lookup(
        query,
        collection,
        record.top_k or services.settings.top_k,
        filters=record.filters,
        also=tuple(record.more_collections),
        min_relevance=record.min_relevance,
    )
    sources = await retrieve(run, lookup)
    since = time.time()
    rewritten = query if query != question else None
    found_event = SourcesEvent(sources=sources)
    await run.stage("generating", found_event, sources=sources, search_query=rewritten, **resolved)

    report = GenerationReport()
    answer = services.llm.stream(
        question,
        sources,
        collection=collection,
        history=history,
        generation=record.generation,
        report=report,
    )
    text, tail = await _generate(run, guarded_stream(services.breakers["llm"], answer), sources)
    run.lap("generation", since)
    if record.conversation_id:
        turn = StoredTurn(
            question=question,
            answer=text,
            job_id=record.job_id,
            search_query=rewritten,
            answered_at=time.time(),
        )
        await services.conversations.add_turn(record.conversation_id, turn)
    return Finished(
        answer=text,
        providers=services.providers,
        usage=report.usage,
        incomplete=report.incomplete,
        before_done=tail,
    )


async def _generate(
    run: Run, answer: AsyncIterator[str], sources: Sequence[Source]
) -> tuple[str, list[TokenEvent]]:
    """Streams the answer as token events; returns all its text, and the event of the text
    left when the stream ended, which goes out in the `done` event's step (one round trip)."""
    parts: list[str] = []
    tail: list[str] = []
    interval = run.services.settings.token_flush_interval
    async for batch in screened_batches(answer, sources, interval, tail=tail):
        if not parts:
            run.lap("time_to_first_token", run.record.created_at or run.started)
        parts.append(batch)
        await run.emit(TokenEvent(text=batch))
    if tail and not parts:
        run.lap("time_to_first_token", run.record.created_at or run.started)
    return "".join(parts + tail), [TokenEvent(text=text) for text in tail]


async def _history(services: Services, record: JobRecord) -> list[Turn]:
    """The turns before the question: its conversation's as they stand now (with the answers
    of the questions it waited for, worker/answering.py), the response's it followed, or else
    those it was asked with."""
    if record.follows is not None:
        return recent_turns(await followed_turns(services.ends, record))
    if record.conversation_id is None:
        return record.history
    conversation = await services.conversations.get(record.conversation_id)
    if conversation is None:  # expired meanwhile: what it was asked with is all there is
        return record.history
    return recent_turns([turn for turn in conversation.turns if turn.job_id != record.job_id])


async def _waits(services: Services, record: JobRecord) -> float | None:
    """A question waits while an earlier one of its conversation is still answering."""
    grace = services.settings.worker_dead_after
    return WAIT_POLL if await waits_for_earlier(services.ends, record, grace=grace) else None


def _providers(services: Services) -> Iterable[str]:
    return ("llm", *retrieval_providers(services))


ANSWER = JobSpec(
    work=_answer,
    first_stage=first_stage,
    providers=_providers,
    waits=_waits,
    waits_on=("follows", "conversation_id"),  # what `_waits` reads first
)


def screened_batches(
    pieces: AsyncIterator[str],
    sources: Sequence[Source],
    interval: float,
    *,
    tail: list[str] | None = None,
) -> AsyncIterator[str]:
    """The LLM's pieces without what an answer must not carry (llm/safety.py), in batches at
    most one per `interval`. Screened piece by piece, then coalesced: text the screen holds
    (what may yet be a link, a tag or an echo) goes out with the piece that decides it, not a
    flush interval later, and the first clean text goes out at once. `tail`: see `coalesce`."""
    return coalesce(screen(pieces, sources), interval, tail=tail)


async def coalesce(
    pieces: AsyncIterator[str], interval: float, *, tail: list[str] | None = None
) -> AsyncIterator[str]:
    """Join streamed pieces into batches at most one per `interval` seconds.

    The first text goes out at once (time to first token is what users feel); later text
    waits until `interval` has passed since the last batch. A piece is only ever held until the
    next one arrives or the stream ends, so nothing is delayed by more than one gap. An empty
    piece (the screen holding everything back) carries no text but still lets a batch out.
    With `tail`, the text still held when the stream ends is put there rather than yielded,
    for a caller that sends it along with its own last word.
    """
    buffer: list[str] = []
    last_flush = -math.inf  # not 0: the monotonic clock may be younger than `interval`
    async for piece in pieces:
        if piece:
            buffer.append(piece)
        now = time.monotonic()
        if buffer and now - last_flush >= interval:
            yield "".join(buffer)
            buffer.clear()
            last_flush = now
    if buffer:
        if tail is None:
            yield "".join(buffer)
        else:
            tail.append("".join(buffer))
