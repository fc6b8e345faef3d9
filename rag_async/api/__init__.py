"""The HTTP API: accepts questions and documents, enqueues jobs, reports and streams them."""

from rag_async.api.app import create_app

__all__ = ["create_app"]
