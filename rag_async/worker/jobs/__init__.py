"""The work a worker does for each kind of job, lived through one lifecycle (lifecycle.py).
The work is thin: retrieval, the LLM and the event log do it, and know nothing of arq."""

from rag_async.store.queue import Kind
from rag_async.worker.jobs.answer import ANSWER
from rag_async.worker.jobs.ingest import DELETE, INGEST
from rag_async.worker.jobs.search import SEARCH
from rag_async.worker.jobs.webhook import deliver_webhook
from rag_async.worker.lifecycle import JobSpec, job_function
from rag_async.worker.services import Services, WorkerContext

JOBS: dict[Kind, JobSpec] = {
    "answer": ANSWER,
    "search": SEARCH,
    "ingest": INGEST,
    "delete": DELETE,
}

__all__ = ["JOBS", "JobSpec", "Services", "WorkerContext", "deliver_webhook", "job_function"]
