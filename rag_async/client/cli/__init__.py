"""The `rag-async` command: run the service, or talk to one.

`base` holds the app and what every command shares; each other module adds one group of
commands when imported, so they are imported in the order `rag-async --help` lists them.
"""

# isort: off
from rag_async.client.cli.base import app, main
from rag_async.client.cli import serve, questions, chat, documents, evaluate, operate  # noqa: F401
# isort: on

__all__ = ["app", "main"]
