"""rag-async: ask questions about your documents; the API answers at once with a job id,
background workers retrieve and generate, and the answer streams back."""

__version__ = "0.1.0"
