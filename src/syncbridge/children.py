"""Child processes that end with their parent.

Producers (first reads) and the rules stage's second process are forked. When the parent is
SIGKILLed they would live on — 100 MB each, the cache still open, a queue nobody reads. On
Linux the kernel kills a child whose parent dies (`PR_SET_PDEATHSIG`); everywhere, and as a
backstop for the moment between fork and that call, a thread checks once a second that the
parent is still the one that forked us.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from contextlib import suppress

_PR_SET_PDEATHSIG = 1
CHECK_S = 1.0


def end_with_parent(parent_pid: int) -> None:
    """Call first thing in a forked child: it ends when the process `parent_pid` does."""
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the call above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(1)
