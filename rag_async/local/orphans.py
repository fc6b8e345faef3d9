"""Child processes that end with the process that started them.

A server started in its own session (the embedded Valkey) does not get the terminal's Ctrl-C,
so if its parent is killed outright (SIGKILL, `timeout -s KILL`, an OOM kill) nothing stops
it: it lives on holding its port and the shell's pipe. On Linux the kernel can send the
child a signal when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ending_with_this_process(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen` that has the child receive `signum` when this
    process dies; None where the platform cannot, or where it would misfire.

    The kernel ties the signal to the thread that started the child, not to the process: a
    child started from a worker thread would be stopped when that thread ends, so only the
    main thread asks for it.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    # Looked up here, before the fork: between fork and exec the child may not import or load.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_the_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # it died before the call above: no signal will come
            os._exit(1)

    return in_the_child
