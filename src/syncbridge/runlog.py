"""Read-only views of the run log and the per-record errors, for `syncbridge runs` and
`syncbridge errors` (data only; the CLI renders or prints JSON).

Every cycle is a `run` row (`pipeline.start_run` / `finish_run`) whose `counts` hold what each
stage did and whose `message` holds why it failed; every value or record that could not be
used is a `record_error` row naming its source, stream, record, field and value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from .rules.language import parse_duration
from .store.bulk import as_utc
from .store.tables import RecordErrorRow, Run

RUN = Run.__table__.c
ERR = RecordErrorRow.__table__.c


def recent_runs(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs first: when, how long, the outcome, the failure reason, and per stage
    its counts (`ingest` per stream and in total, `identity`, `rules`, `push` per audience)."""
    with engine.connect() as conn:
        rows = conn.execute(select(Run.__table__).order_by(RUN.id.desc()).limit(limit)).mappings()
        return [_run(dict(row)) for row in rows]


def _run(row: dict[str, Any]) -> dict[str, Any]:
    counts = row.get("counts") or {}
    started, finished = as_utc(row["started_at"]), as_utc(row["finished_at"])
    stages: dict[str, Any] = {
        "ingest": {"totals": counts.get("totals", {}), "streams": counts.get("streams", {})}
    }
    if counts.get("remapped"):
        stages["remap"] = counts["remapped"]
    for stage in ("identity", "rules", "push"):
        if stage in counts:
            stages[stage] = counts[stage]
    return {
        "run_id": row["id"],
        "status": row["status"],
        "started_at": started.isoformat() if started else None,
        "finished_at": finished.isoformat() if finished else None,
        "seconds": round((finished - started).total_seconds(), 3) if started and finished else None,
        "reason": row["message"],
        "stages": stages,
    }


@dataclass(frozen=True)
class ErrorFilter:
    source: str | None = None
    stream: str | None = None
    """A stream's name, or "source/stream"."""
    since: datetime | None = None
    limit: int = 50


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: a duration back from now (`90m`, `1h`, `2d`, `1w`) or an ISO date or time
    (`2026-12-01`, `2026-12-01T08:00`, naive times in UTC). A ValueError says what is accepted."""
    text = text.strip()
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration like 1h, 30m or 2d nor an ISO date like 2026-12-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_errors(engine: Engine, filters: ErrorFilter) -> tuple[list[dict[str, Any]], bool]:
    """Per-record errors passing the filters, newest first, and whether more matched."""
    query = select(RecordErrorRow.__table__)
    if filters.stream is not None and "/" in filters.stream:
        source, _, stream = filters.stream.partition("/")
        query = query.where(ERR.source == source, ERR.stream == stream)
    elif filters.stream is not None:
        query = query.where(ERR.stream == filters.stream)
    if filters.source is not None:
        query = query.where(ERR.source == filters.source)
    if filters.since is not None:
        query = query.where(ERR.created_at >= filters.since)
    query = query.order_by(ERR.id.desc()).limit(filters.limit + 1)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    more = len(rows) > filters.limit
    return [_error(r) for r in rows[: filters.limit]], more


def _error(row: dict[str, Any]) -> dict[str, Any]:
    created = as_utc(row["created_at"])
    return {
        "id": row["id"],
        "run_id": row["run_id"],
        "source": row["source"],
        "stream": row["stream"],
        "record": row["external_id"],
        "field": row["field"],
        "value": row["value"],
        "message": row["message"],
        "created_at": created.isoformat() if created else None,
    }
