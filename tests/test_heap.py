"""The API freezes what it built at start (rag_async/heap.py), once it has started: later
full collections skip it."""

from __future__ import annotations

import subprocess
import sys

from rag_async.config import Settings
from tests.conftest import REPO, running_api


async def test_the_app_calls_when_ready_once_started_before_serving(settings: Settings) -> None:
    calls: list[str] = []
    async with running_api(settings, when_ready=lambda: calls.append("ready")) as base_url:
        assert calls == ["ready"], base_url


def test_settle_heap_freezes_what_the_process_holds() -> None:
    probe = (
        "import gc\n"
        "from rag_async.api import create_app\n"
        "from rag_async.config import Settings\n"
        "from rag_async.heap import settle_heap\n"
        "app = create_app(Settings(_env_file=None))\n"
        "before = gc.get_freeze_count()\n"
        "settle_heap()\n"
        "print(before, gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    before, frozen, left = map(int, done.stdout.split())
    assert before == 0
    # The app's routes, schemas and modules: frozen, and no longer walked by a collection.
    assert frozen > 10 * left
