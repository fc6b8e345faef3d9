"""The cyclic garbage collector, told what a server process keeps for its whole life.

Most of a long-running process's heap is what it built at start (modules, classes, schemas,
routes) and keeps. A full collection walks all of it again and holds the interpreter while it
does, stalling every request and stream the process serves at that moment; in the API under
load, such passes come every ten seconds or so (docs/benchmarks.md). `settle_heap`, called
once the process has started, collects what starting left over and freezes the rest, so that
later collections walk only what was made since. A frozen object is still freed by reference
counting; only a reference cycle among them would stay, and those were made at start.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    gc.collect()
    gc.freeze()
