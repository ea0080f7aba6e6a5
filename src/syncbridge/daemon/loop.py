"""The daemon: a pipeline cycle every `every` seconds until SIGTERM or Ctrl-C.

The writer lock is taken per cycle, not for the daemon's life, so `push`, `db upgrade` or a
manual `run --once` can go between cycles; a cycle that cannot get the lock within `wait`
seconds is skipped with a warning. Only the first cycle reads the `full_refresh` streams from
scratch. A failed cycle is logged and the next one runs on time: the daemon stops only for
a signal, or for an error it cannot explain (a bug, which it re-raises). Each cycle's outcome
is the job `cycle` for the failure alerts (`alerts.py`); a cycle skipped for a busy cache
counts neither way.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..alerts import AlertState
from ..config.loader import Settings, StreamKey
from ..errors import CacheBusyError, SyncbridgeError
from ..logs import log_context
from ..pipeline import ProgressHook, run_cycle
from ..store.engine import open_engine
from ..store.failures import store_failure
from ..store.writer_lock import writer_lock

log = logging.getLogger(__name__)

Progress = Callable[[], AbstractContextManager[ProgressHook | None]]
"""Opens the progress display of one cycle (the CLI's: a live display or log lines)."""


@dataclass(frozen=True)
class DaemonOptions:
    every: int
    """Seconds from the start of one cycle to the start of the next."""
    wait: float
    """Seconds a cycle waits for another process's writer lock before it is skipped."""
    full_refresh: list[StreamKey] = field(default_factory=list)
    """Streams the first cycle reads from scratch."""
    allow_mass_removal: bool = False


def run_daemon(
    settings: Settings, options: DaemonOptions, progress: Progress = lambda: nullcontext()
) -> None:
    """Run cycles until SIGTERM or Ctrl-C; returns once the running cycle has finished."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler()
    every = options.every
    cycle = _Cycle(settings, options, progress)
    scheduler.add_job(
        cycle, "interval", seconds=every, max_instances=1, coalesce=True,
        next_run_time=datetime.now(UTC),
    )  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=True))
    log.info("daemon started: a cycle every %ds (Ctrl-C or SIGTERM stops it)", every)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log.info("daemon stopped")
    finally:
        cycle.alerts.close(timeout=5.0)


class _Cycle:
    """One scheduled cycle: under the writer lock, logged, never fatal for a known failure."""

    JOB = "cycle"

    def __init__(self, settings: Settings, options: DaemonOptions, progress: Progress) -> None:
        self.settings, self.options, self.progress = settings, options, progress
        self.refresh = list(options.full_refresh)
        self.alerts = AlertState.from_config(settings.config.daemon)

    def __call__(self) -> None:
        with log_context(job=self.JOB):
            ran, failure = self._run()
        if ran:
            self.alerts.record(self.JOB, failure is None, failure)

    def _run(self) -> tuple[bool, BaseException | None]:
        """One cycle: whether it ran (a busy cache skips it), and how it failed."""
        store = self.settings.config.store
        every = self.options.every
        try:
            with writer_lock(store.url, f"run --every {every}", self.options.wait):
                engine = open_engine(store.url, store.echo)
                with self.progress() as hook:
                    report = run_cycle(
                        self.settings, engine, hook, full_refresh=self.refresh,
                        allow_mass_removal=self.options.allow_mass_removal,
                    )  # fmt: skip
            self.refresh.clear()  # only the first cycle reads from scratch
            fields = {"run_id": report.run_id, "counts": report.counts()["totals"]}
            log.info("run %d %s in %.1fs", report.run_id, report.status, report.seconds,
                     extra=fields)  # fmt: skip
            return True, None
        except CacheBusyError as exc:
            log.warning("%s; skipping this cycle, the next one starts in %ds", exc, every)
            return False, None
        except SyncbridgeError as exc:
            log.error("cycle failed: %s", exc)
            return True, exc
        except Exception as exc:
            failure = store_failure(exc, store.url)
            if failure is None:
                raise
            log.error("cycle failed: %s", failure)
            return True, failure
