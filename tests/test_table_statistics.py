"""PostgreSQL's planner statistics follow tables that one bulk run grows from nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from syncbridge.ingest import StreamIngest, ingest_streams
from syncbridge.store.statistics import TableStatistics
from syncbridge.transform import RecordTransformer

from .streams import PERSON_MAPPING, ListStream


def reltuples(engine: Engine, table: str) -> float:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT reltuples FROM pg_class WHERE relname = :t"), {"t": table}
        ).scalar_one()


def test_a_table_is_analyzed_each_time_its_written_rows_double(engine: Engine) -> None:
    statistics = TableStatistics(engine, first=100)
    analyzed = []
    for rows in (60, 50, 100, 20, 5):
        statistics.wrote("source_record", rows)
        analyzed.append(statistics.analyzed["source_record"])
    if engine.dialect.name == "postgresql":
        assert analyzed == [0, 1, 1, 2, 2]  # at 110 (>= 100), then at 230 (>= 2 x 110)
        assert reltuples(engine, "source_record") == 0  # really analyzed: was -1, never
    else:
        assert analyzed == [0, 0, 0, 0, 0]  # SQLite plans without statistics


PEOPLE = [
    {"id": f"r{i:06d}", "crm_id": f"c{i}", "email": f"person{i}@gmail.com", "first_name": "Ana"}
    for i in range(12_000)
]


@pytest.mark.parametrize("store_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)  # fmt: skip
def test_after_a_first_load_key_lookups_seek_the_whole_key(engine: Engine) -> None:
    """A question for PostgreSQL's planner only."""
    job = StreamIngest("crm", ListStream("people", PEOPLE, 2_000),
                       RecordTransformer(PERSON_MAPPING, "US"), parallel=False)  # fmt: skip
    ingest_streams(engine, [job])
    with engine.connect() as conn:
        plan = "\n".join(
            conn.exec_driver_sql(
                "EXPLAIN SELECT external_id, id, content_hash FROM source_record "
                "WHERE source = 'crm' AND stream = 'people' AND external_id IN ('r000001', 'r000002')"
            ).scalars()
        )
    # Without statistics the planner took `source = … AND stream = …` for one row and filtered
    # the whole stream's index range for the keys (300 ms per 500 keys at 200 k records).
    assert "Filter" not in plan, plan
    assert "external_id" in plan.split("Index Cond")[1], plan
