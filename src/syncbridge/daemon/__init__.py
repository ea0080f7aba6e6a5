"""Running syncbridge unattended: `syncbridge run --every N` is `loop.run_daemon`."""

from __future__ import annotations

from .loop import DaemonOptions, run_daemon

__all__ = ["DaemonOptions", "run_daemon"]
