"""The arq worker entry point: `rag-async worker`, or `arq workers.settings.WorkerSettings`."""
