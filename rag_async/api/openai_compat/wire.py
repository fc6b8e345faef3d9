"""OpenAI's object shapes, made from a job: ids, statuses, the response object, the output
message with its citations, and the model that answers.

A response's id and a chat completion's are the job's id with OpenAI's prefix, so any id a
client holds leads back to the job (and to /jobs/{id} and its events).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from rag_async.api.openai_compat.cited_files import call_item, file_of, is_file, searched
from rag_async.config import Settings
from rag_async.domain.generation import Generation, Usage
from rag_async.domain.job import JobRecord, JobStatus, is_job_id
from rag_async.domain.sources import Source

RESPONSE_PREFIX = "resp_"
MESSAGE_PREFIX = "msg_"
COMPLETION_PREFIX = "chatcmpl-"
# The offline answerer has no model name of its own; clients need one to send back.
OFFLINE_MODEL = "extractive"

_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.IN_PROGRESS: "in_progress",
    JobStatus.COMPLETE: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
_CITATION = re.compile(r"\[(\d{1,3})\]")


def served_model(settings: Settings) -> str:
    """The model that answers: the configured LLM's, or the offline answerer's name."""
    return settings.llm_model if settings.llm_configured else OFFLINE_MODEL


def response_id(job_id: str) -> str:
    return f"{RESPONSE_PREFIX}{job_id}"


def job_id_of(response_id: str) -> str | None:
    """The job a response id names (the bare job id is taken too); None if it names none."""
    job_id = response_id.removeprefix(RESPONSE_PREFIX)
    return job_id if is_job_id(job_id) else None


def response_status(status: JobStatus) -> str:
    return _STATUS[status]


def _cited(text: str, sources: Sequence[Source]) -> Iterator[tuple[re.Match[str], Source]]:
    """Each `[n]` of `text` that names one of `sources`, with that source, in order."""
    by_number = {source.n: source for source in sources}
    for match in _CITATION.finditer(text):
        if (source := by_number.get(int(match[1]))) is not None:
            yield match, source


def citations(text: str, sources: Sequence[Source]) -> list[dict[str, Any]]:
    """The citations of `text`: each `[n]` naming a source becomes a `url_citation` (a source
    with a web address) or a `file_citation` (a document of the collection) at its place."""
    found: list[dict[str, Any]] = []
    for match, source in _cited(text, sources):
        if source.source and source.source.startswith(("http://", "https://")):
            found.append(
                {
                    "type": "url_citation",
                    "url": source.source,
                    "title": source.title,
                    "start_index": match.start(),
                    "end_index": match.end(),
                }
            )
        else:
            file_id, filename = file_of(source)
            found.append(
                {
                    "type": "file_citation",
                    "file_id": file_id,
                    "filename": filename,
                    "index": match.start(),
                }
            )
    return found


def chat_citations(text: str, sources: Sequence[Source], base_url: str) -> list[dict[str, Any]]:
    """The citations of `text` as chat completions carry them. OpenAI's chat completions know
    one annotation type, `url_citation` (the SDKs type it so), so a document of the
    collection is cited by its address on this service (GET /documents/{id}, with the key
    that may read it; a vector store's file, by its `GET /v1/files/{id}/content`) rather than
    with a type that typed clients would choke on."""
    found: list[dict[str, Any]] = []
    for match, source in _cited(text, sources):
        url = source.source
        if is_file(source):
            url = f"{base_url.rstrip('/')}/v1/files/{source.source}/content"
        elif not (url and url.startswith(("http://", "https://"))):
            url = f"{base_url.rstrip('/')}/documents/{source.document_id}"
        cited: dict[str, Any] = {"url": url, "title": source.title}
        cited.update(start_index=match.start(), end_index=match.end())
        found.append({"type": "url_citation", "url_citation": cited})
    return found


def output_text(text: str, sources: Sequence[Source]) -> dict[str, Any]:
    return {
        "type": "output_text",
        "text": text,
        "annotations": citations(text, sources),
        "logprobs": [],
    }


def output_message(
    job_id: str, text: str | None, sources: Sequence[Source], *, done: bool
) -> dict[str, Any]:
    """The assistant's message item: its one text part, when there is text."""
    return {
        "id": f"{MESSAGE_PREFIX}{job_id}",
        "type": "message",
        "role": "assistant",
        "status": "completed" if done else "in_progress",
        "content": [] if text is None else [output_text(text, sources)],
    }


def response_object(
    record: JobRecord,
    settings: Settings,
    *,
    status: str | None = None,
    text: str | None = None,
    sources: Sequence[Source] | None = None,
    usage: Usage | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """The response object for a job: its status, its output message once it has text
    (`text`; the record's answer when not given), and what the request asked, echoed."""
    incomplete = incomplete or record.incomplete
    status = status or response_status(record.status)
    if status == "completed" and incomplete:
        status = "incomplete"
    text = text if text is not None else record.answer
    sources = record.sources if sources is None else sources
    output = [] if text is None else [output_message(record.job_id, text, sources, done=True)]
    if output and status in ("queued", "in_progress", "incomplete"):
        output[0]["status"] = "in_progress" if status != "incomplete" else "incomplete"
    if output and searched(record):  # the search that found the sources comes first
        output.insert(0, call_item(record, sources, done=True))
    error = None
    if status == "failed":
        error = {"code": "server_error", "message": record.error or "the answer failed"}
    return {
        "id": response_id(record.job_id),
        "object": "response",
        "created_at": int(record.created_at or 0),
        "status": status,
        "model": served_model(settings),
        "output": output,
        "error": error,
        "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
        "usage": response_usage(usage or record.usage) if status in _ENDED else None,
        "parallel_tool_calls": False,
        "tool_choice": record.v1.get("tool_choice", "auto"),
        "tools": record.v1.get("tools", []),
        "conversation": (
            {"id": record.conversation_id} if record.conversation_id is not None else None
        ),
        **echoed(record),
    }


_ENDED = frozenset({"completed", "incomplete", "failed", "cancelled"})


def echoed(record: JobRecord) -> dict[str, Any]:
    """What the request asked, as the response object echoes it (honoured.py keeps it)."""
    generation = record.generation or Generation()
    v1 = record.v1
    return {
        "background": bool(v1.get("background", False)),
        "instructions": generation.instructions,
        "max_output_tokens": generation.max_output_tokens,
        "temperature": generation.temperature,
        "top_p": None,
        "metadata": v1.get("metadata") or {},
        "previous_response_id": v1.get("previous_response_id"),
        "store": v1.get("store", True),
        "text": v1.get("text") or {"format": {"type": "text"}},
        "truncation": v1.get("truncation", "disabled"),
    }


def response_usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def chat_usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
