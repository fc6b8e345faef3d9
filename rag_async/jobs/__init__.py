"""The functions a worker runs. They are thin: retrieval, the LLM and the event log do the work
and know nothing of arq."""

from .answer import answer_question
from .context import Services, WorkerContext
from .ingest import delete_document, ingest_document

__all__ = ["Services", "WorkerContext", "answer_question", "delete_document", "ingest_document"]
