"""An event's wire JSON read back into its typed model, as the service reads it."""

from rag_async.domain.events import decode_event

__all__ = ["decode_event"]
