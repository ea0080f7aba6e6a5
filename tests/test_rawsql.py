"""The bulk write helpers behave like a loop of single-row statements, on both databases
(PostgreSQL takes larger batches through COPY and a staging table)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from syncbridge.store.rawsql import (
    COPY_FROM_ROWS,
    Json,
    datetime_binder,
    insert_tuples,
    update_many,
)
from syncbridge.store.tables import SourceRecord

RECORDS = SourceRecord.__table__
COLUMNS = ("id", "source", "stream", "external_id", "payload", "content_hash", "attributes",
           "identifiers", "source_ts", "deleted", "pending", "updated_at", "run_id")  # fmt: skip
N = COPY_FROM_ROWS + 50


def rows(engine: Engine, version: int, ids: range) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        when = datetime_binder(conn)
    return [
        (i, "crm", "people", f"p{i}", Json(f'{{"v": {version}, "name": "Zoë"}}'), f"h{version}",
         Json('{"city": "Köln"}'), Json('[["email", "a@b.co"]]'),
         when("2026-11-20T10:00:00Z") if i % 2 else None, False, True,
         when(datetime(2026, 11, 23, tzinfo=UTC)), None)
        for i in ids
    ]  # fmt: skip


def stored(engine: Engine) -> dict[str, tuple[object, ...]]:
    r = RECORDS.c
    with engine.connect() as conn:
        result = conn.execute(select(r.external_id, r.payload, r.content_hash, r.source_ts))
        return {key: rest for key, *rest in result}


def test_an_upsert_with_repeated_keys_keeps_the_last_copy(engine: Engine) -> None:
    first = rows(engine, 1, range(1, N + 1))
    again = rows(engine, 2, range(1, 11)) + rows(engine, 3, range(1, 11))  # same keys twice
    key = ("source", "stream", "external_id")
    with engine.begin() as conn:
        insert_tuples(conn, RECORDS, COLUMNS, first, key, COLUMNS[4:])
    with engine.begin() as conn:
        insert_tuples(conn, RECORDS, COLUMNS, first[10:] + again, key, COLUMNS[4:])
    cache = stored(engine)
    assert len(cache) == N
    assert cache["p5"][:2] == [{"v": 3, "name": "Zoë"}, "h3"]  # the last copy of p5 won
    assert cache["p11"][:2] == [{"v": 1, "name": "Zoë"}, "h1"]
    moment = cache["p3"][2]
    assert moment is not None and moment.replace(tzinfo=UTC) == datetime(
        2026, 11, 20, 10, tzinfo=UTC
    )
    assert cache["p4"][2] is None


def test_update_many_matches_a_loop_of_updates(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_tuples(conn, RECORDS, COLUMNS, rows(engine, 1, range(1, N + 1)))
    changes = [{"id": i, "profile_id": i * 10, "pending": False} for i in range(1, N + 1)]
    changes += [{"id": 7, "profile_id": 777, "pending": True}]  # a later change to the same row
    with engine.begin() as conn:
        update_many(conn, RECORDS, changes, "id")
    r = RECORDS.c
    with engine.connect() as conn:
        placed = dict(conn.execute(select(r.id, r.profile_id)).all())
        pending = set(conn.execute(select(r.id).where(r.pending.is_(True))).scalars())
    assert placed[8] == 80 and placed[N] == N * 10
    assert placed[7] == 777 and pending == {7}
