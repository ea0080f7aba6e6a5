"""The progress of a cycle as it runs: a live display on a terminal, a few log lines without.

Fed by the pipeline's `ProgressHook`: counts per label (a stream's records read, a push's
members), the share of a read done and its expected total when the connector knows them, and
the stage the cycle moved to (labels starting with `pipeline.STAGE`). On a terminal each count
is a line of a live display that stops spinning once the cycle moves on; without one (a
service, a pipe, JSON logs) a count is a log line when it starts, then at most every
`PROGRESS_LOG_S`, and its final total: never one line per member.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .pipeline import STAGE, ProgressHook

log = logging.getLogger("syncbridge")


def _share(done: int, share: float | None, expected: int | None) -> float:
    """The part of a read done: as its connector measured it, else records of those expected."""
    if share is not None:
        return max(0.0, min(1.0, share))
    return min(1.0, done / expected) if expected else 0.0


PROGRESS_LOG_S = 10.0
"""Without a terminal, a progress count is logged at most this often (and once at the end)."""


@contextmanager
def progress_display(console: Console, plain: bool) -> Iterator[ProgressHook]:
    """A hook for `run_cycle` and the push; `plain`: log lines instead of a live display."""
    if plain:
        totals: dict[str, int] = {}
        shown: dict[str, tuple[float, int]] = {}  # label → (when, total) last logged

        shares: dict[str, float] = {}

        def line(label: str) -> None:
            shown[label] = (time.monotonic(), totals[label])
            done = f" ({shares[label]:.0%})" if label in shares else ""
            log.info("%s: %d%s", label, totals[label], done,
                     extra={"progress": label, "count": totals[label]})  # fmt: skip

        def log_page(
            label: str, n: int, *, share: float | None = None, expected: int | None = None
        ) -> None:
            """A line when a count starts and then at most every PROGRESS_LOG_S: a push of
            thousands of members is a few lines in a service's log, not one per member."""
            if label.startswith(STAGE):  # the cycle's own log line says it already
                return
            totals[label] = totals.get(label, 0) + n
            if share is not None or expected:
                shares[label] = _share(totals[label], share, expected)
            if label not in shown or time.monotonic() - shown[label][0] >= PROGRESS_LOG_S:
                line(label)

        yield log_page
        for label in totals:  # the final counts, where the last line did not show them
            if shown[label][1] != totals[label]:
                line(label)
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def finish_all() -> None:
            for task in progress.tasks:
                if not task.finished:
                    progress.update(
                        task.id, total=task.completed or 1, completed=task.completed or 1
                    )

        counts: dict[str, int] = {}

        def advance(
            label: str, n: int, *, share: float | None = None, expected: int | None = None
        ) -> None:
            if label.startswith(STAGE):  # a new stage: the counts so far are done
                finish_all()
                name = label.removeprefix(STAGE) + " …"
                tasks[label] = progress.add_task(name, total=None, count="")
                return
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=None, count="0")
            counts[label] = counts.get(label, 0) + n
            count = f"{counts[label]:,}" + (f" of {expected:,}" if expected else "")
            if share is not None or expected:
                count += f" ({_share(counts[label], share, expected):.0%})"
            progress.update(tasks[label], advance=n, count=count)

        yield advance
        finish_all()
