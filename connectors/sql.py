"""SQL connector: a table or a query per stream, from any database SQLAlchemy reaches.

For teams whose orders, customers and models already live in a database or a warehouse: the
source is a SQLAlchemy URL (PostgreSQL and MariaDB/MySQL are tested; another warehouse needs
only its dialect package), each stream a `table` (optionally in a `schema`) or a `query`.

Reading is streamed with a server-side cursor (`stream_results`), `page_size` rows a page, so
memory stays bounded by one page whatever the table's size. A stream with a `cursor_field`
(an `updated_at` timestamp, or an increasing number such as a row version) is incremental:
rows are read in cursor order from the engine's high-water mark, every page is a checkpoint,
and a datetime cursor starts `overlap_s` before the mark, because a row stamped before the
mark by a transaction that committed after the last read would otherwise be skipped for good
(repeats cost a hash comparison). The cursor column must be set on insert as well as on
update: a row whose cursor is NULL is read by a first (or full-refresh) read only.

Deletes reach the cache two ways: a `deleted_field` (a soft-delete column such as
`deleted_at` or `is_deleted`: a row where it is set or true is a delete; with an incremental
stream the delete must also move the row's cursor), or `snapshot = true` (no cursor: every
read is complete, and rows no longer returned are deleted).

The URL's password is registered as a secret: it never appears in a log, an error or a
traceback.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
import weakref
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy import (
    DateTime,
    MetaData,
    Select,
    Table,
    column,
    create_engine,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.sql.sqltypes import NullType

from syncbridge.cleaning import format_datetime, parse_datetime
from syncbridge.config.models import SourceConfig
from syncbridge.connectors import DELETED, Connector, Page, SourceOptions, Stream, StreamOptions
from syncbridge.cursors import Cursor, CursorType, Resume
from syncbridge.errors import FatalError
from syncbridge.redaction import redact, register_url_password
from syncbridge.references import did_you_mean

from . import describe_rows

log = logging.getLogger(__name__)
_UNSET = {"", "0", "false", "f", "no", "n"}


def _own_connections_after_fork(engine: Engine) -> None:
    """A forked producer process must not use the connections it inherited from its parent
    (settings checks open one to look the table up): the two processes would share one
    socket, and a producer killed mid-read would leave that session in its transaction,
    holding its locks for as long as the parent lives. The child forgets the pool, without
    closing the parent's connections (SQLAlchemy's recipe for os.fork)."""
    reference = weakref.ref(engine)

    def forget() -> None:
        alive = reference()
        if alive is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=forget)


class SqlOptions(SourceOptions):
    """Where the database is, and how long to wait for it."""

    url: SecretStr
    """A SQLAlchemy URL, e.g. postgresql+psycopg://reader:${DB_PASSWORD}@db.internal/shop."""
    connect_timeout_s: int = Field(default=30, ge=1)
    timezone: str = "UTC"
    """The zone of timestamps stored without one (`timestamp without time zone`, DATETIME)."""

    @field_validator("url")
    @classmethod
    def _a_url(cls, value: SecretStr) -> SecretStr:
        register_url_password(value.get_secret_value())
        try:
            make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError("not a SQLAlchemy database URL (dialect+driver://…)") from None
        return value


class SqlStreamOptions(StreamOptions):
    table: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    query: str | None = None
    """A SELECT whose rows are the stream's records (read as a derived table)."""
    primary_key: list[str] = Field(default_factory=list)
    """Key columns (default: the table's primary key)."""
    cursor_field: str | None = None
    cursor_type: CursorType = "datetime"
    deleted_field: str | None = None
    snapshot: bool = False
    page_size: int = Field(default=5000, ge=1, le=100_000)
    overlap_s: int = Field(default=300, ge=0)
    """A datetime cursor's read starts this long before the mark (late-committing writes)."""

    @field_validator("primary_key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlStreamOptions:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None and not self.primary_key:
            raise ValueError("a 'query' stream needs 'primary_key' (its key columns)")
        if self.snapshot and self.cursor_field:
            raise ValueError(
                "a snapshot stream is read whole each time: drop 'cursor_field' or 'snapshot'"
            )
        return self


class SqlStream(Stream):
    def __init__(self, connector: SqlConnector, options: SqlStreamOptions) -> None:
        self.connector = connector
        self.options = options
        self.name = options.name
        self.snapshot = options.snapshot
        self.cursor_field = options.cursor_field
        self.cursor = (
            Cursor(options.cursor_field, options.cursor_type) if options.cursor_field else None
        )
        self._source: Any = None
        self.primary_key = tuple(options.primary_key) or self._table_key()

    # -- what the stream reads ----------------------------------------------------------------

    def source(self) -> Any:
        """The table (reflected, so names are quoted as the database spells them) or the
        query as a derived table."""
        if self._source is None:
            engine = self.connector.engine()
            o = self.options
            try:
                if o.table is not None:
                    self._source = Table(o.table, MetaData(), schema=o.schema_,
                                         autoload_with=engine)  # fmt: skip
                else:
                    query = (o.query or "").strip().rstrip(";")
                    with self.connector.connect() as conn:
                        probe = conn.execute(text(f"SELECT * FROM ({query}) src WHERE 1 = 0"))
                        names = list(probe.keys())
                    self._source = text(query).columns(*(column(n) for n in names)).subquery("src")
            except NoSuchTableError:
                where = f"{o.schema_}.{o.table}" if o.schema_ else o.table
                tables = inspect(engine).get_table_names(schema=o.schema_)
                raise FatalError(
                    f"stream {self.name!r}: no table {where!r} in the database"
                    f"{did_you_mean(o.table or '', tables)}"
                ) from None
            except SQLAlchemyError as exc:
                raise self.connector.failure(f"looking up stream {self.name!r}", exc) from None
        return self._source

    def _table_key(self) -> tuple[str, ...]:
        if self.options.table is None:
            return ()
        return tuple(c.name for c in self.source().primary_key.columns)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return self.primary_key

    def columns(self) -> Sequence[str] | None:
        return [c.name for c in self.source().columns]

    def _statement(self, since: Any) -> Select[Any]:
        source = self.source()
        cols = source.columns
        missing = [n for n in (*self.primary_key, self.cursor_field) if n and n not in cols]
        if missing or not self.primary_key:
            known = ", ".join(c.name for c in cols)
            raise FatalError(
                f"stream {self.name!r}: "
                + (f"no column {missing[0]!r} (columns: {known})" if missing else
                   "the table has no primary key; set 'primary_key'")
            )  # fmt: skip
        query = select(source)
        order = [cols[k] for k in self.primary_key]
        if self.cursor_field is not None:
            cursor = cols[self.cursor_field]
            if since is not None:
                query = query.where(cursor >= since)
            order = [cursor, *order]
        return query.order_by(*order)

    # -- reading ------------------------------------------------------------------------------

    def read(self, cursor: Any | None) -> Iterator[Page]:
        resume = cursor if isinstance(cursor, Resume) else self.resume(cursor)
        since = self._since(resume.mark)
        statement = self._statement(since)
        size = self.options.page_size
        last: list[dict[str, Any]] | None = None
        try:
            with self.connector.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=size).execute(
                    statement
                )
                names = list(result.keys())
                for rows in result.partitions(size):
                    page = [self._record(names, row) for row in rows]
                    if last is not None:
                        yield Page(last, None, checkpoint=not self.snapshot)
                    last = page
        except SQLAlchemyError as exc:
            raise self.connector.failure(f"reading {self.name!r}", exc) from None
        # the last page says the read is complete (a snapshot's deletes follow from it)
        yield Page(last or [], None, complete=self.snapshot)

    def describe(self) -> list[dict[str, Any]]:
        """Columns with the database's type, how often empty, and a sample (first rows)."""
        source = self.source()
        types = {c.name: str(c.type) for c in source.columns if not isinstance(c.type, NullType)}
        statement = select(source).limit(describe_rows.SAMPLE_ROWS)
        try:
            with self.connector.connect() as conn:
                result = conn.execute(statement)
                names = list(result.keys())
                rows = [self._record(names, row) for row in result]
        except SQLAlchemyError as exc:
            raise self.connector.failure(f"sampling stream {self.name!r}", exc) from None
        flat = (dict(describe_rows.flatten(r)) for r in rows)
        return describe_rows.describe(flat, names, types)

    def _since(self, mark: Any) -> Any:
        if mark is None:
            return None
        if not isinstance(mark, datetime):
            return mark
        moment = mark - timedelta(seconds=self.options.overlap_s)
        kind = self.source().columns[self.cursor_field].type
        if isinstance(kind, DateTime) and kind.timezone:
            return moment  # a column with a zone compares moments
        # without one (or unknown, from a query) the driver sends a naive value as it is:
        # give it in the zone the column's values are written in
        return moment.astimezone(ZoneInfo(self.connector.zone)).replace(tzinfo=None)

    def _record(self, names: list[str], row: Sequence[Any]) -> dict[str, Any]:
        json_value = self.connector.json_value
        record = {name: json_value(value) for name, value in zip(names, row, strict=True)}
        flag = self.options.deleted_field
        if flag is not None and _is_set(record.get(flag)):
            record[DELETED] = True
        return record


def _is_set(value: Any) -> bool:
    """A soft-delete column is set: a timestamp, true, 1, 'yes' (not NULL, false, 0, 'no')."""
    if value is None or value is False or value == 0:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in _UNSET
    return True


class SqlConnector(Connector):
    """Reads tables or queries from a SQL database through SQLAlchemy."""

    source_options = SqlOptions
    stream_options = SqlStreamOptions

    def __init__(
        self,
        source: SourceConfig,
        options: SourceOptions,
        streams: list[StreamOptions],
        base_dir: Path,
    ) -> None:
        super().__init__(source, options, streams, base_dir)
        self._engine: Engine | None = None

    def streams(self) -> list[Stream]:
        return [SqlStream(self, s) for s in self.stream_configs]  # type: ignore[arg-type]

    def engine(self) -> Engine:
        if self._engine is None:
            options: SqlOptions = self.options  # type: ignore[assignment]
            url = make_url(options.url.get_secret_value())
            connect_args: dict[str, Any] = {}
            if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
                connect_args["connect_timeout"] = options.connect_timeout_s
            try:
                self._engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
                _own_connections_after_fork(self._engine)
            except (NoSuchModuleError, ModuleNotFoundError) as exc:
                raise FatalError(
                    f"source {self.source.name!r}: no driver for {url.drivername!r} "
                    f"({exc}); install its package, e.g. pip install 'syncbridge[mysql]'"
                ) from None
        return self._engine

    def connect(self) -> Any:
        try:
            return self.engine().connect()
        except SQLAlchemyError as exc:
            raise self.failure("connecting", exc) from None

    def describe(self, obj: str) -> list[dict[str, Any]]:
        """Stream `obj`'s columns, with a sample of each."""
        stream = self.stream_named(obj)
        assert isinstance(stream, SqlStream)
        return stream.describe()

    def check(self) -> None:
        with self.connect() as conn:
            conn.execute(text("SELECT 1"))

    def failure(self, doing: str, exc: SQLAlchemyError) -> FatalError:
        """A database error as one line naming the source and the database (no password)."""
        url = self.engine().url.render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return FatalError(redact(f"source {self.source.name!r}: {doing} at {url}: {reason}"))

    # -- values as JSON ------------------------------------------------------------------------

    def json_value(self, value: Any) -> Any:
        """A database value as the JSON a mapping reads: moments in ISO 8601 UTC, decimals as
        exact text, bytes as base64; dicts and lists (JSON columns) as they are."""
        if value is None or isinstance(value, bool | int | float | str | dict | list):
            return value
        if isinstance(value, datetime):
            return format_datetime(parse_datetime(value, None, self.zone))
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, time):
            return value.isoformat()
        if isinstance(value, Decimal):
            return format(value, "f")
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(value)).decode("ascii")
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, timedelta):
            return value.total_seconds()
        return str(value)

    @property
    def zone(self) -> str:
        options: SqlOptions = self.options  # type: ignore[assignment]
        return options.timezone
