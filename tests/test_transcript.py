"""One rule for "the answer so far" (rag_async/transcript.py), and every Python reader of it
held to the same event logs (tests/fixtures/answer_logs.json): the rule itself, the client's
`Answer`, and `/job-status` folding a real job's log in Valkey. The web page's copy of the rule
(web/transcript.js) is tested against the same logs in test_web.py."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from rag_async.client.api import Answer, JobEvent
from rag_async.config import Settings
from rag_async.domain.events import TERMINAL_EVENT_TYPES, encode_event
from rag_async.domain.transcript import Transcript
from rag_async.store.events import EventLog
from rag_async.store.jobs import JobStore
from rag_async.store.keys import Keys
from tests.conftest import running_api
from tests.support.answer_logs import ANSWER_LOGS, AnswerLog
from tests.support.events import decode_event

each_log = pytest.mark.parametrize("log", ANSWER_LOGS, ids=[log.name for log in ANSWER_LOGS])


@each_log
def test_the_logs_are_events_as_the_worker_writes_them(log: AnswerLog) -> None:
    for event in log.events:
        assert orjson.loads(encode_event(decode_event(orjson.dumps(event)))) == event


@each_log
def test_the_rule(log: AnswerLog) -> None:
    transcript = Transcript()
    dropped = [transcript.apply(decode_event(orjson.dumps(event))) for event in log.events]
    assert transcript.text == log.answer
    assert transcript.discarded == log.discarded
    assert dropped.count(True) == len(log.discarded)


@each_log
def test_the_client_answer(log: AnswerLog) -> None:
    answer = Answer()
    events = [JobEvent(n, event["type"], event) for n, event in enumerate(log.events, start=1)]
    dropped = [event for event in events if answer.apply(event)]
    assert answer.text == log.answer
    assert answer.discarded == log.discarded
    # Told once for each dead attempt's text, at the status announcing the next attempt.
    assert len(dropped) == len(log.discarded)
    assert all(event.type == "status" for event in dropped)
    ended = [event for event in events if event.type in TERMINAL_EVENT_TYPES]
    assert answer.final == (ended[-1] if ended else None)


@each_log
async def test_job_status_reads_the_answer_so_far_from_the_log(
    settings: Settings, log: AnswerLog
) -> None:
    job_id = secrets.token_hex(16)
    async with Redis.from_url(settings.redis_url or "") as redis:
        keys = Keys(settings.key_prefix)
        await JobStore(redis, keys, 60).create(job_id, "answer", {"query": "tea?"})
        events = EventLog(redis, keys, 60)
        for n, event in enumerate(log.events):
            # The record stays in progress, so the view folds the whole log: as it does when
            # it reads the record just before a `done` lands and the log just after.
            record = {"status": "in_progress"} if n == 0 else None
            await events.append(job_id, decode_event(orjson.dumps(event)), record)
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/job-status", params={"job_id": job_id})
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    assert (view["status"], view["answer_is_partial"]) == ("in_progress", True)
    assert view["answer"] == log.answer
    assert view["last_event_id"] == len(log.events)
