"""The daemon's jobs in `syncbridge status`: lease holder, next run, last result, failures.

Read from the job board (`daemon_job`), which every agent keeps current, so a `status` run
from any process (any machine, on PostgreSQL) sees all agents' jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.table import Table
from sqlalchemy import Engine

from ..store.bulk import as_utc
from .leases import job_rows


def jobs(engine: Engine) -> list[dict[str, Any]]:
    """Every daemon job's row; the holder is shown only while its lease is live."""
    with engine.connect() as conn:
        rows = job_rows(conn)
    for row in rows:
        if not row.pop("lease_live"):
            row["holder"] = None
        row.pop("lease_expires_at", None)
    return rows


def _when(value: datetime | None) -> str:
    moment = as_utc(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Daemon jobs (UTC)")
    for col in ("job", "held by", "next run", "last run", "result", "last success", "failures"):
        table.add_column(col, justify="right" if col == "failures" else "left")
    for row in rows:
        result = row["last_status"] or ""
        if row["last_status"] == "failed" and row["last_error"]:
            result = f"failed: {row['last_error'][:80]}"
        table.add_row(
            row["job"], row["holder"] or "none", _when(row["next_run_at"]),
            _when(row["last_started_at"]), result, _when(row["last_success_at"]),
            str(row["failures"] or ""),
        )  # fmt: skip
    return table
