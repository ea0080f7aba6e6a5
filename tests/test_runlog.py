"""`runlog`: the run log and per-record errors as `runs` and `errors` read them, on SQLite and
PostgreSQL (time filters compare stored UTC times on both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert

from syncbridge.runlog import ErrorFilter, parse_since, recent_runs, record_errors
from syncbridge.store.tables import RecordErrorRow, Run

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_parse_since_reads_durations_and_iso_times() -> None:
    assert parse_since("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_since("2d", NOW) == NOW - timedelta(days=2)
    assert parse_since("2026-11-30", NOW) == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_since("2026-11-30T08:00+01:00", NOW) == datetime(2026, 11, 30, 7, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("last tuesday", NOW)


@pytest.mark.postgres
def test_errors_filter_by_time_source_and_stream(engine: Engine) -> None:
    rows = [
        {"source": "crm", "stream": "contacts", "external_id": "c1", "field": "Email",
         "value": "x", "message": "old", "created_at": NOW - timedelta(days=3)},
        {"source": "crm", "stream": "contacts", "external_id": "c2", "field": "Phone",
         "value": "y", "message": "new", "created_at": NOW - timedelta(minutes=5)},
        {"source": "shop", "stream": "contacts", "external_id": "s1", "field": None,
         "value": None, "message": "shop", "created_at": NOW - timedelta(minutes=1)},
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(RecordErrorRow.__table__), rows)

    def messages(**kw: object) -> list[str]:
        found, _ = record_errors(engine, ErrorFilter(**kw))  # type: ignore[arg-type]
        return [e["message"] for e in found]

    assert messages() == ["shop", "new", "old"]
    assert messages(since=NOW - timedelta(hours=1)) == ["shop", "new"]
    assert messages(source="crm") == ["new", "old"]
    assert messages(stream="crm/contacts") == ["new", "old"]
    assert messages(stream="contacts") == ["shop", "new", "old"]
    found, more = record_errors(engine, ErrorFilter(limit=1))
    assert len(found) == 1 and more
    assert found[0]["created_at"] == (NOW - timedelta(minutes=1)).isoformat()


@pytest.mark.postgres
def test_runs_newest_first_with_the_reason(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Run.__table__), [
            {"started_at": NOW, "finished_at": NOW + timedelta(seconds=2), "status": "ok",
             "counts": {"totals": {"read": 5}, "streams": {}, "identity": {"records": 5}},
             "message": None},
            {"started_at": NOW + timedelta(minutes=5), "finished_at": None, "status": "failed",
             "counts": {}, "message": "crm/contacts: the export went missing"},
        ])  # fmt: skip
    failed, ok = recent_runs(engine)
    assert failed["reason"] == "crm/contacts: the export went missing" and failed["seconds"] is None
    assert ok["seconds"] == 2.0 and ok["stages"]["ingest"]["totals"] == {"read": 5}
    assert ok["stages"]["identity"] == {"records": 5} and "rules" not in ok["stages"]
    assert [r["run_id"] for r in recent_runs(engine, limit=1)] == [failed["run_id"]]
