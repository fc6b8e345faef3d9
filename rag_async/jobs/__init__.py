"""The work a worker does for each kind of job, lived through one lifecycle (lifecycle.py).
The work is thin: retrieval, the LLM and the event log do it, and know nothing of arq."""

from ..queues import Kind
from .answer import ANSWER
from .context import Services, WorkerContext
from .ingest import DELETE, INGEST
from .lifecycle import JobSpec, job_function
from .webhook import deliver_webhook

JOBS: dict[Kind, JobSpec] = {"chat": ANSWER, "ingest": INGEST, "delete": DELETE}

__all__ = ["JOBS", "JobSpec", "Services", "WorkerContext", "deliver_webhook", "job_function"]
