"""Forked child processes: they end with their parent, and report a failure in one way.

Producers (first reads) and the rules stage's second process are forked. When the parent is
SIGKILLed they would live on — 100 MB each, the cache still open, a queue nobody reads. On
Linux the kernel kills a child whose parent dies (`PR_SET_PDEATHSIG`); everywhere, and as a
backstop for the moment between fork and that call, a thread checks once a second that the
parent is still the one that forked us.

A child that fails sends `reported(where, exc)` to its parent over its queue: a
SyncbridgeError whose text says where, with secrets masked (the child's exception may quote a
connection URL or a token), of the child's own class when it is one of ours and survives the
pipe (an AuthError stays an AuthError), else a FatalError naming the original type.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import threading
import time
from contextlib import suppress

from .errors import FatalError, SyncbridgeError
from .redaction import redact

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


def reported(where: str, exc: BaseException) -> SyncbridgeError:
    """The error a failed child sends its parent, which raises it or records it as is."""
    report: SyncbridgeError = FatalError(redact(f"{where}: {type(exc).__name__}: {exc}"))
    if isinstance(exc, SyncbridgeError):
        # A class with a richer constructor, or one that does not survive pickling, stays wrapped.
        with suppress(TypeError, pickle.PickleError):
            same = type(exc)(redact(f"{where}: {exc}"))
            report = pickle.loads(pickle.dumps(same))
    return report
