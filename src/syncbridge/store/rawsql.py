"""The hot write path: parameterised SQL run with the driver's own `executemany`.

SQLAlchemy Core spends more time binding parameters (type processors, JSON encoding per value)
than SQLite spends writing them; on the ingest path that halved throughput. Here each column is
converted once per row by a precomputed converter and the statement goes to the driver's
`executemany` through `exec_driver_sql` (so SQLAlchemy's events and transaction still apply).
JSON values may come pre-encoded (`Json`): a payload serialised once for its content hash is
not serialised again. On PostgreSQL, batches of `COPY_FROM_ROWS` or more go through COPY into a
staging table and one set-based statement instead (the server runs each row of an executemany
as a statement of its own). Reads of many keys (`select_in`) bind their IN lists the same way.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import JSON, Connection, DateTime, Table

from .bulk import as_utc, chunks

Converter = Callable[[Any], Any]


class Json(str):
    """Text that is already JSON: stored as is."""


def to_json(value: Any) -> Json:
    return Json(dumps(value))


def dumps(value: Any, sort_keys: bool = False) -> str:
    """Compact JSON text (orjson: several times faster than the standard library)."""
    try:
        return orjson.dumps(
            value, default=str, option=orjson.OPT_SORT_KEYS if sort_keys else 0
        ).decode()
    except TypeError:  # integers beyond 64 bits: the standard library copes
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), default=str, sort_keys=sort_keys
        )


def _json(value: Any) -> Any:
    if value is None or isinstance(value, Json):
        return value
    return to_json(value)


@lru_cache(maxsize=65536)
def _sqlite_datetime(value: datetime | str | None) -> str | None:
    """The text form SQLAlchemy's SQLite dialect stores and parses (naive UTC); accepts
    datetimes and ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def read_json(value: Any) -> Any:
    """A JSON column's value as the driver returns it: text on SQLite, parsed on PostgreSQL."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@lru_cache(maxsize=65536)
def _parse_sqlite_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def read_datetime(value: Any) -> datetime | None:
    """A datetime column's value as the driver returns it (SQLite: naive UTC text), aware UTC."""
    if isinstance(value, str):
        return _parse_sqlite_datetime(value)
    return as_utc(value)


def _converters(conn: Connection, table: Table, columns: Sequence[str]) -> list[Converter | None]:
    sqlite = conn.dialect.name == "sqlite"
    out: list[Converter | None] = []
    for name in columns:
        column_type = table.c[name].type
        if isinstance(column_type, JSON):
            out.append(_json)
        elif isinstance(column_type, DateTime) and sqlite:
            out.append(_sqlite_datetime)
        else:
            out.append(None)
    return out


def _placeholders(conn: Connection, table: Table, columns: Sequence[str]) -> list[str]:
    """Positional markers (binding tuples is a third faster than binding dicts)."""
    if conn.dialect.name == "sqlite":
        return ["?"] * len(columns)
    return ["CAST(%s AS json)" if isinstance(table.c[c].type, JSON) else "%s" for c in columns]


def _tuples(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Rows as tuples in column order, with each value converted for the driver."""
    pick = itemgetter(*columns)
    converters = _converters(conn, table, columns)
    single = len(columns) == 1  # itemgetter of one column returns the value, not a tuple
    values = [(pick(row),) for row in rows] if single else [pick(row) for row in rows]
    fixes = [(i, f) for i, f in enumerate(converters) if f is not None]
    if not fixes:
        return values
    out = []
    for row in values:
        items = list(row)
        for i, convert in fixes:
            items[i] = convert(items[i])
        out.append(tuple(items))
    return out


def _execute(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """The driver's executemany, through SQLAlchemy so that its events and logging still see it."""
    conn.exec_driver_sql(sql, rows)


def _q(name: str) -> str:
    return f'"{name}"'


def insert_many(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
) -> None:
    """INSERT rows (all with the same keys); with `conflict`, upsert `update` columns or skip."""
    if not rows:
        return
    columns = list(rows[0])
    insert_tuples(conn, table, columns, _tuples(conn, table, rows, columns), conflict, update)


def insert_tuples(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
) -> None:
    """`insert_many` for rows already in column order with driver-ready values (JSON as text,
    datetimes through `datetime_binder`): the ingest path builds them so, once per row."""
    if not rows:
        return
    clause = ""
    if conflict:
        target = ", ".join(map(_q, conflict))
        if update:
            sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in update)
            clause = f" ON CONFLICT ({target}) DO UPDATE SET {sets}"
        else:
            clause = f" ON CONFLICT ({target}) DO NOTHING"
    names = ", ".join(map(_q, columns))
    if _use_copy(conn, rows):
        if update:  # one statement may not update a row twice: the last copy wins, as in a loop
            rows = _last_per_key(rows, columns, conflict)
        stage = _stage(conn, table, columns, rows)
        conn.exec_driver_sql(f"INSERT INTO {_q(table.name)} ({names}) SELECT {names} FROM {stage}"
                             f"{clause}; TRUNCATE {stage}")  # fmt: skip
        return
    marks = ", ".join(_placeholders(conn, table, columns))
    _execute(conn, f"INSERT INTO {_q(table.name)} ({names}) VALUES ({marks}){clause}", rows)


def datetime_binder(conn: Connection) -> Converter:
    """What a datetime (or ISO 8601 text) column value becomes for this connection's driver."""
    return _sqlite_datetime if conn.dialect.name == "sqlite" else _same


def _same(value: Any) -> Any:
    return value


def select_in(
    conn: Connection, sql: str, params: Sequence[Any], values: Sequence[Any], size: int = 500
) -> Iterator[tuple[Any, ...]]:
    """Rows of `sql`, whose `{in}` stands for a list of values, run in chunks of `size`.

    Bound straight by the driver: SQLAlchemy's expanding IN costs a microsecond per value,
    which a per-page look-up of thousands of keys notices. `sql` uses `?` for `params`.
    """
    for result in _run_in(conn, sql, params, values, size):
        yield from result.all()  # one fetchall per chunk


def execute_in(
    conn: Connection, sql: str, params: Sequence[Any], values: Sequence[Any], size: int = 500
) -> int:
    """`select_in` for statements that change rows (UPDATE/DELETE … IN); returns the count."""
    return sum(result.rowcount for result in _run_in(conn, sql, params, values, size))


def _run_in(
    conn: Connection, sql: str, params: Sequence[Any], values: Sequence[Any], size: int
) -> Iterator[Any]:
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        sql = sql.replace("?", "%s")
    mark = "%s" if postgres else "?"
    for part in chunks(values, size):
        text = sql.replace("{in}", ", ".join([mark] * len(part)))
        yield conn.exec_driver_sql(text, (*params, *part))


def update_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], key: str) -> None:
    """UPDATE table SET (other keys) WHERE key = row[key], for rows that share their keys."""
    if not rows:
        return
    sets = [c for c in rows[0] if c != key]
    columns = [*sets, key]
    values = _tuples(conn, table, rows, columns)
    if _use_copy(conn, values):
        stage = _stage(conn, table, columns, _last_per_key(values, columns, [key]))
        assignments = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in sets)
        conn.exec_driver_sql(
            f"UPDATE {_q(table.name)} AS t SET {assignments} FROM {stage} AS s "
            f"WHERE t.{_q(key)} = s.{_q(key)}; TRUNCATE {stage}"
        )
        return
    marks = _placeholders(conn, table, columns)
    assignments = ", ".join(f"{_q(c)} = {m}" for c, m in zip(sets, marks, strict=False))
    sql = f"UPDATE {_q(table.name)} SET {assignments} WHERE {_q(key)} = {marks[-1]}"
    _execute(conn, sql, values)


COPY_FROM_ROWS = 200
"""PostgreSQL: from this many rows, writes go through COPY into a staging table and one
set-based statement. An executemany runs each row as a statement of its own (~40 µs apiece
even pipelined); COPY streams rows in a few µs."""


def _use_copy(conn: Connection, rows: Sequence[Any]) -> bool:
    return conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM_ROWS


def _last_per_key(
    rows: list[tuple[Any, ...]], columns: Sequence[str], key: Sequence[str]
) -> list[tuple[Any, ...]]:
    pick = itemgetter(*[list(columns).index(c) for c in key])
    return list({pick(row): row for row in rows}.values())


def _stage(conn: Connection, table: Table, columns: Sequence[str], rows: list[Any]) -> str:
    """COPY rows into this session's staging table for (table, columns); returns its name.

    The staging table has the columns' types and no constraints; it empties at commit and
    after each use, and lives as long as the pooled connection.
    """
    names = ", ".join(map(_q, columns))
    stage = f"_sb_stage_{table.name}_{zlib.crc32(names.encode()):08x}"
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
        f"SELECT {names} FROM {_q(table.name)} WITH NO DATA"
    )
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return stage


def allocate_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """Reserve `count` new primary keys, so that bulk inserts need no RETURNING round trips.

    PostgreSQL draws them from the column's sequence. SQLite serialises writers, so the next
    ids after the current maximum are free unless another process inserts first, in which case
    the insert fails on the key and the whole batch is retried later.
    """
    if count <= 0:
        return []
    if conn.dialect.name == "postgresql":
        result = conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence(%(t)s, 'id')) FROM generate_series(1, %(n)s)",
            {"t": table.name, "n": count},
        )
        return [row[0] for row in result]
    start = conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {_q(table.name)}").scalar_one()
    return list(range(start + 1, start + 1 + count))
