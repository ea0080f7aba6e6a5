"""Run rows of daemon jobs: one per pass that did something, with the job's name in its counts.

`pipeline.start_run` marks every other `running` row interrupted, which holds for one-off
commands (one writer at a time); daemon jobs run side by side, so they write their own rows.
A pass that found nothing to do removes its row again: an idle daemon writes no history.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, insert, update

from ..store.bulk import utcnow
from ..store.tables import Run

RUNS = Run.__table__


def begin(engine: Engine, job: str, agent: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(RUNS).returning(RUNS.c.id),
                {
                    "started_at": utcnow(),
                    "status": "running",
                    "counts": {"job": job, "agent": agent},
                },
            ).scalar_one()
        )


def end(
    engine: Engine, run_id: int, job: str, agent: str, counts: dict[str, Any], error: str | None
) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(
                finished_at=utcnow(),
                status="failed" if error else "ok",
                counts={"job": job, "agent": agent, **counts},
                message=error[:2000] if error else None,
            )
        )


def discard(engine: Engine, run_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(RUNS.delete().where(RUNS.c.id == run_id))


def interrupt_all(engine: Engine) -> int:
    """Runs left `running` by a killed process (SQLite: the daemon is the only writer)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                update(RUNS)
                .where(RUNS.c.status == "running")
                .values(
                    status="interrupted", finished_at=utcnow(), message="the process ended mid-run"
                )
            ).rowcount
            or 0
        )
