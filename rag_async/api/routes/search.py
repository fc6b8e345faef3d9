"""POST /search: retrieval alone. The chunk store is the workers' (an embedded one opens in one
process only), so a search is a job like a question's, at a question's priority; the request
waits for its end, as a /v1 request that wants a whole answer does, and holds one of its key's
stream slots meanwhile. A search still queued when the wait is up answers 202 with its job:
its results are then at GET /jobs/{id}, nothing is lost."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from rag_async.api.auth import Caller
from rag_async.api.bodies import require_utf8
from rag_async.api.enqueue import Submission, enqueue
from rag_async.api.errors import json_response
from rag_async.api.openai_compat.answers import wait_for_end
from rag_async.api.questions import checked_query
from rag_async.api.state import AppState, State
from rag_async.api.stream import given_back_on_error, stream_slot
from rag_async.domain.errors import Conflict, RagError
from rag_async.domain.job import JobRecord, JobStatus, new_job_id, record_fields
from rag_async.domain.schemas import ErrorBody, JobAccepted, SearchRequest, SearchResults
from rag_async.domain.sources import fit_sources

router = APIRouter(tags=["questions"])


class SearchFailed(RagError):
    status_code = 502
    code = "search_failed"


@router.post(
    "/search",
    response_model=SearchResults,
    responses={
        202: {"model": JobAccepted, "description": "Still queued when the wait was up."},
        **{status: {"model": ErrorBody} for status in (400, 409, 422, 429, 502, 503, 507)},
    },
)
async def search(body: SearchRequest, request: Request, state: State, caller: Caller) -> Response:
    """The passages that best match `query`, best first, with their scores: what an answer
    to it would be written from, without the answer. Waits for its job up to
    RAG_SEARCH_WAIT seconds; a search still queued then answers 202 with its `job_id`, and
    its results are at `status_url` once it has ended."""
    require_utf8(body)
    submission = Submission(state, request, caller)
    release = stream_slot(state, caller)  # before the job: a refused request leaves none
    job_id = await given_back_on_error(release, submit_search(submission, body))
    try:
        record = await wait_for_end(state, job_id, state.settings.search_wait)
    finally:
        release()
    if record is None:
        accepted = submission.accepted(JobAccepted, job_id)
        return json_response(accepted.model_dump(), status=202)
    return json_response(search_results(state, record).model_dump(mode="json"))


async def submit_search(
    submission: Submission, body: SearchRequest, *, min_relevance: float | None = None
) -> str:
    """Queue the search's job in the caller's collection, keeping the sources of
    `min_relevance` at least (/v1's threshold: domain/relevance.py); its id."""
    state, caller = submission.state, submission.caller
    query = checked_query(body.query, state.settings.max_query_chars)
    collection = caller.collection(body.collection or state.settings.default_collection)
    fields = record_fields(
        query=query,
        collection=collection,
        top_k=body.top_k or state.settings.top_k,
        score_threshold=body.score_threshold,
        filters=body.filters,
        min_relevance=min_relevance,
    )
    job_id = new_job_id()
    await enqueue(submission, job_id, "search", fields)
    return job_id


def search_results(state: AppState, record: JobRecord) -> SearchResults:
    """An ended search's results; 409 if it was cancelled, 502 if it failed."""
    if record.status is JobStatus.CANCELLED:
        raise Conflict(f"search {record.job_id} was cancelled", code="cancelled")
    if record.status is not JobStatus.COMPLETE:
        raise SearchFailed(record.error or "the search failed")
    # As a job view shows them: a record written before passages were bounded may hold any.
    sources = fit_sources(record.sources, state.settings.max_source_chars)
    return SearchResults(job_id=record.job_id, results=sources)
