"""arq's command line: `arq workers.settings.WorkerSettings` (questions) or
`arq workers.settings.DocumentWorkerSettings` (documents). The worker lives in
rag_async/worker/process.py; this module only names it for arq."""

from typing import Any

from rag_async.worker import process


def __getattr__(name: str) -> Any:
    # Lazily, so importing this module reads no environment.
    return getattr(process, name)
