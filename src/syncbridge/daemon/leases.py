"""Job leases and the job board: which agent runs which job, and how each job last went.

One row per job in `daemon_job`. An agent runs a job only while it holds that job's lease: a
row whose `holder` is the agent and whose `lease_expires_at` lies ahead. Taking a lease is one
conditional UPDATE (`holder` is me, or nobody, or the lease expired), so of two agents racing
for it exactly one matches: on PostgreSQL the second UPDATE waits for the first's row lock and
then re-checks its condition against the committed row. Times come from the database server
on PostgreSQL (agents' clocks may differ) and from this machine on SQLite (one machine).

A live agent renews its leases every `lease_s / 4` for `0.75 * lease_s`; a dead one stops, so
its leases expire at most `0.75 * lease_s` after its last renewal, and a standby polling every
`lease_s / 4` takes them within one lease period of the death. A job that is running when its
lease is lost (the database unreachable for longer than that) finishes its current pass; the
journal's claims keep a pass taken twice from losing or doubling work (`store/journal.py`).

On SQLite the daemon holds the cache's writer lock for its life, so it is the only agent and
every lease is its own; the rows still tell `syncbridge status` what the jobs are doing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update

from ..store.bulk import utcnow
from ..store.rawsql import insert_many
from ..store.tables import DaemonJob, Run

JOBS = DaemonJob.__table__
RUNS = Run.__table__
RENEW_SHARE = 0.25
"""Leases are renewed (and free ones looked for) every this share of `lease_s` …"""
EXPIRY_SHARE = 0.75
"""… and last this share of it: a dead agent's jobs move within one `lease_s`."""


def agent_name() -> str:
    return f"{socket.gethostname()} pid={os.getpid()}"


class JobBoard:
    """The `daemon_job` rows of one agent's jobs: leases, next runs, results."""

    def __init__(self, engine: Engine, lease_s: float, agent: str | None = None) -> None:
        self.engine, self.lease_s = engine, lease_s
        self.agent = agent or agent_name()

    @property
    def renew_every_s(self) -> float:
        return self.lease_s * RENEW_SHARE

    def _now(self, conn: Connection) -> datetime:
        if conn.dialect.name == "postgresql":
            return conn.execute(select(func.now())).scalar_one()  # type: ignore[no-any-return]
        return utcnow()

    def ensure(self, jobs: Iterable[str]) -> None:
        rows = [{"job": j, "failures": 0} for j in jobs]
        if rows:
            with self.engine.begin() as conn:
                insert_many(conn, JOBS, rows, ["job"], [])

    def acquire(self, jobs: Sequence[str]) -> set[str]:
        """Take or renew the leases of these jobs; returns those this agent holds now. A run
        left `running` by the expired holder of a lease taken over is marked interrupted."""
        held: set[str] = set()
        if not jobs:
            return held
        with self.engine.begin() as conn:
            now = self._now(conn)
            expired = conn.execute(
                select(JOBS.c.job, JOBS.c.run_id).where(
                    JOBS.c.job.in_(jobs),
                    JOBS.c.holder.is_not(None),
                    JOBS.c.holder != self.agent,
                    JOBS.c.lease_expires_at < now,
                )
            ).all()
        for job in jobs:
            with self.engine.begin() as conn:
                now = self._now(conn)
                taken = conn.execute(
                    update(JOBS)
                    .where(
                        JOBS.c.job == job,
                        or_(
                            JOBS.c.holder == self.agent,
                            JOBS.c.holder.is_(None),
                            JOBS.c.lease_expires_at < now,
                        ),
                    )
                    .values(
                        holder=self.agent,
                        lease_expires_at=now + timedelta(seconds=self.lease_s * EXPIRY_SHARE),
                    )
                ).rowcount
            if taken:
                held.add(job)
        orphans = [run_id for job, run_id in expired if job in held and run_id is not None]
        if orphans:
            with self.engine.begin() as conn:
                conn.execute(
                    update(RUNS)
                    .where(RUNS.c.id.in_(orphans), RUNS.c.status == "running")
                    .values(
                        status="interrupted",
                        finished_at=utcnow(),
                        message="the agent running it stopped renewing its lease",
                    )
                )
        return held

    def release(self, jobs: Iterable[str]) -> None:
        """Give the leases back (a clean shutdown): a standby need not wait for them to expire."""
        names = list(jobs)
        if names:
            with self.engine.begin() as conn:
                conn.execute(
                    update(JOBS)
                    .where(JOBS.c.job.in_(names), JOBS.c.holder == self.agent)
                    .values(holder=None, lease_expires_at=None)
                )

    def started(self, job: str, run_id: int | None) -> None:
        self._set(job, last_started_at=utcnow(), last_status="running", run_id=run_id)

    def finished(self, job: str, error: str | None, failing_since: datetime | None) -> None:
        """The end of a run: a success resets the failure count, a failure adds one."""
        now = utcnow()
        values: dict[str, Any] = {"last_finished_at": now}
        if error is None:
            values |= {
                "last_status": "ok",
                "last_success_at": now,
                "last_error": None,
                "failures": 0,
                "failing_since": None,
            }
        else:
            values |= {
                "last_status": "failed",
                "last_error": error[:2000],
                "failures": JOBS.c.failures + 1,
                "failing_since": failing_since,
            }
        self._set(job, **values)

    def planned(self, next_runs: dict[str, datetime | None]) -> None:
        """When each job held here runs next (by its schedule, or its backoff)."""
        with self.engine.begin() as conn:
            for job, when in next_runs.items():
                conn.execute(
                    update(JOBS)
                    .where(JOBS.c.job == job, JOBS.c.holder == self.agent)
                    .values(next_run_at=when)
                )

    def _set(self, job: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(JOBS).where(JOBS.c.job == job).values(**values))


def job_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every job's row, with whether its lease is live now (for `status` and /v1/admin/status)."""
    postgres = conn.dialect.name == "postgresql"
    now = conn.execute(select(func.now())).scalar_one() if postgres else utcnow()
    live = and_(JOBS.c.holder.is_not(None), JOBS.c.lease_expires_at >= now)
    query = select(JOBS, live.label("lease_live")).order_by(JOBS.c.job)
    return [dict(row) for row in conn.execute(query).mappings()]
