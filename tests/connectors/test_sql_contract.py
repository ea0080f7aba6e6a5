"""The SQL connector passes the connector contract: on SQLite always, on PostgreSQL when
SYNCBRIDGE_TEST_POSTGRES_URL is set and on MariaDB when SYNCBRIDGE_TEST_MARIADB_URL is set
(`.ci/run` sets both). The source tables live in those databases; the cache is SQLite."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    text,
    update,
)
from sqlalchemy.engine import make_url

from syncbridge.config.loader import Settings
from syncbridge.connectors import build_connector
from syncbridge.pipeline import run_cycle
from syncbridge.store.engine import open_engine

from ..builders import settings_from
from .contract import ConnectorContract, Harness, people

MAPPING = """
[identifiers]
email = "email"
external = { "shop:customer" = "id" }
[attributes]
first_name = "first_name"
signed_up = { field = "signed_up", type = "date" }
"""
SECRET = "s3cr3t-Pa55word"


def _databases() -> list[Any]:
    found: list[Any] = ["sqlite"]
    for name, env in (("postgresql", "SYNCBRIDGE_TEST_POSTGRES_URL"),
                      ("mariadb", "SYNCBRIDGE_TEST_MARIADB_URL")):  # fmt: skip
        url = os.environ.get(env)
        found.append(url if url else pytest.param(None, marks=pytest.mark.skip(f"{env} unset"),
                                                  id=name))  # fmt: skip
    return found


@pytest.fixture(params=_databases(), ids=lambda p: "sqlite" if p == "sqlite" else "server")
def source_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'source.db'}"
    url = make_url(request.param)
    if url.get_backend_name() == "postgresql":
        url = url.set(password=SECRET)  # trust auth ignores it; errors must never show it
    return url.render_as_string(hide_password=False)


class SqlHarness(Harness):
    """A `customers` table with an `updated_at` cursor and a `deleted_at` soft delete."""

    secret = SECRET

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.dir = tmp_path
        self.url = url
        self.db = create_engine(url)
        self.zoned = self.db.dialect.name == "postgresql"
        self.name = f"customers_{uuid.uuid4().hex[:8]}"
        self.table = Table(
            self.name, MetaData(),
            Column("id", String(20), primary_key=True),
            Column("email", String(200)),
            Column("first_name", String(100)),
            Column("signed_up", String(40)),
            Column("updated_at", DateTime(timezone=self.zoned)),
            Column("deleted_at", DateTime(timezone=self.zoned), nullable=True),
        )  # fmt: skip
        self.table.create(self.db)
        self.clock = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        (tmp_path / "customers.toml").write_text(MAPPING, encoding="utf-8")

    def close(self) -> None:
        self.table.drop(self.db)
        self.db.dispose()

    def moment(self, value: datetime) -> datetime:
        return value if self.zoned else value.replace(tzinfo=None)

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.moment(self.clock)

    def _upsert(self, people: list[dict[str, Any]], stamp: datetime) -> None:
        with self.db.begin() as conn:
            for p in people:
                row = {"email": p["email"], "first_name": p["first_name"],
                       "signed_up": "2026-01-15", "updated_at": stamp, "deleted_at": None}  # fmt: skip
                done = conn.execute(update(self.table).where(self.table.c.id == p["id"]), row)
                if not done.rowcount:
                    conn.execute(self.table.insert(), {"id": p["id"], **row})

    def put(self, people: list[dict[str, Any]]) -> None:
        self._upsert(people, self.tick())

    def put_older(self, people: list[dict[str, Any]]) -> None:
        self._upsert(people, self.moment(datetime(2020, 1, 1, tzinfo=UTC)))

    def delete(self, ids: list[str]) -> None:
        stamp = self.tick()
        with self.db.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.id.in_(ids)),
                         {"deleted_at": stamp, "updated_at": stamp})  # fmt: skip

    def break_record(self, person_id: str) -> str:
        with self.db.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.id == person_id),
                         {"signed_up": "the fifteenth", "updated_at": self.tick()})  # fmt: skip
        return person_id

    def break_credentials(self) -> None:
        """The reader loses its table (a revoked grant looks the same to it): trust auth and a
        password-less root leave no login to break on the test servers."""
        with self.db.begin() as conn:
            conn.execute(text(f"ALTER TABLE {self.name} RENAME TO {self.name}_gone"))
        self.table.name = f"{self.name}_gone"

    def stream(self) -> dict[str, Any]:
        return {"name": "customers", "table": self.name, "cursor_field": "updated_at",
                "deleted_field": "deleted_at", "page_size": self.page_size,
                "mapping": "customers.toml"}  # fmt: skip

    def settings(self, store_url: str) -> Settings:
        data = {
            "store": {"url": store_url},
            "sources": [{"name": "shopdb", "connector": "sql", "url": self.url,
                         "streams": [self.stream()]}],
        }  # fmt: skip
        return settings_from(data, self.dir)


class TestSqlTableContract(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path, source_url: str) -> Any:
        harness = SqlHarness(tmp_path, source_url)
        yield harness
        harness.close()


class QueryHarness(SqlHarness):
    """The same rows through a `query` (a join or a view's SELECT, as a team would write)."""

    def stream(self) -> dict[str, Any]:
        query = (f"SELECT id, email, first_name, signed_up, updated_at, deleted_at "
                 f"FROM {self.name} WHERE email IS NOT NULL")  # fmt: skip
        return {"name": "customers", "query": query, "primary_key": "id",
                "cursor_field": "updated_at", "deleted_field": "deleted_at",
                "page_size": self.page_size, "mapping": "customers.toml"}  # fmt: skip


class TestSqlQueryContract(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path, source_url: str) -> Any:
        harness = QueryHarness(tmp_path, source_url)
        yield harness
        harness.close()


class SnapshotHarness(SqlHarness):
    """No cursor: every read is whole, and a row deleted for real is a delete."""

    def delete(self, ids: list[str]) -> None:
        with self.db.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.id.in_(ids)))

    def stream(self) -> dict[str, Any]:
        return {"name": "customers", "table": self.name, "snapshot": True,
                "page_size": self.page_size, "mapping": "customers.toml"}  # fmt: skip


class TestSqlSnapshotContract(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path, source_url: str) -> Any:
        harness = SnapshotHarness(tmp_path, source_url)
        yield harness
        harness.close()


# -- beyond the contract --------------------------------------------------------------------


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Any:
    harness = SqlHarness(tmp_path, f"sqlite:///{tmp_path / 'source.db'}")
    yield harness
    harness.close()


def _stream(harness: SqlHarness, **options: Any) -> Any:
    settings = harness.settings(f"sqlite:///{harness.dir / 'cache.db'}")
    source = settings.config.sources[0]
    if options:
        data = {"store": {"url": "sqlite:///unused.db"},
                "sources": [{"name": "shopdb", "connector": "sql", "url": harness.url,
                             "streams": [{**harness.stream(), **options}]}]}  # fmt: skip
        source = settings_from(data, harness.dir).config.sources[0]
    return build_connector(source, harness.dir).streams()[0]


def test_a_row_committed_late_with_an_earlier_stamp_is_read_within_the_overlap(
    sqlite_harness: SqlHarness,
) -> None:
    """A transaction stamps a row, commits after the next read began: the read that follows
    starts `overlap_s` before the mark, so the row is not skipped for good."""
    h = sqlite_harness
    h.put(people(1, 3))
    engine = open_engine(f"sqlite:///{h.dir / 'cache.db'}")
    run_cycle(h.settings(str(engine.url)), engine)
    late = h.moment(h.clock - timedelta(seconds=30))  # stamped before the mark, seen after it
    h._upsert([{"id": "P0100", "email": "late@gmail.com", "first_name": "Late"}], late)
    report = run_cycle(h.settings(str(engine.url)), engine)
    assert report.totals.inserted == 1
    engine.dispose()


def test_validate_names_a_missing_column_and_the_columns_there_are(
    sqlite_harness: SqlHarness,
) -> None:
    from syncbridge.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _stream(sqlite_harness, cursor_field="modified_at")
    assert "cursor_field: unknown column 'modified_at' (columns: 'id', 'email'" in str(
        info.value.problems[0]
    )


def test_an_unknown_table_and_a_missing_driver_are_one_line_errors(
    sqlite_harness: SqlHarness,
) -> None:
    from syncbridge.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _stream(sqlite_harness, table="custmers")
    said = str(info.value.problems[0])
    assert "stream 'customers': no table 'custmers' in the database; did you mean" in said
    sqlite_harness.url = "mysql+nosuchdriver://u:pw@127.0.0.1/x"
    with pytest.raises(ConfigError, match="no driver for 'mysql\\+nosuchdriver'"):
        _stream(sqlite_harness)


def test_values_arrive_as_json_a_mapping_reads(sqlite_harness: SqlHarness) -> None:
    from decimal import Decimal

    connector = build_connector(
        sqlite_harness.settings("sqlite:///unused.db").config.sources[0], sqlite_harness.dir
    )
    value = connector.json_value  # type: ignore[attr-defined]
    assert value(Decimal("1234.50")) == "1234.50"
    assert value(datetime(2026, 3, 1, 12, 0, 0, 250000)) == "2026-03-01T12:00:00.250Z"
    assert value(datetime(2026, 3, 1, 7, 0, tzinfo=UTC)) == "2026-03-01T07:00:00Z"
    assert value(b"\x00\xff") == "AP8="
    assert value({"a": [1, 2]}) == {"a": [1, 2]}


def test_pages_are_streamed_not_read_whole(sqlite_harness: SqlHarness) -> None:
    sqlite_harness.put(people(1, 35))
    pages = list(_stream(sqlite_harness).read(None))
    assert [len(p.records) for p in pages] == [10, 10, 10, 5]
    assert all(p.checkpoint for p in pages) and not any(p.complete for p in pages)
    ordered = [r["updated_at"] for p in pages for r in p.records]
    assert ordered == sorted(ordered)


def test_the_password_is_never_in_an_error(tmp_path: Path) -> None:
    harness_url = f"postgresql+psycopg://reader:{SECRET}@127.0.0.1:1/nothing"
    (tmp_path / "customers.toml").write_text(MAPPING, encoding="utf-8")
    data = {"store": {"url": "sqlite:///unused.db"},
            "sources": [{"name": "shopdb", "connector": "sql", "url": harness_url,
                         "connect_timeout_s": 2,
                         "streams": [{"name": "customers", "table": "customers",
                                      "primary_key": "id", "mapping": "customers.toml"}]}]}  # fmt: skip
    from syncbridge.errors import ConfigError

    with pytest.raises(ConfigError) as info:  # validate looks the table up: it says so first
        settings_from(data, tmp_path)
    said = str(info.value)
    assert SECRET not in said and "reader:***@127.0.0.1:1/nothing" in said
    assert "source 'shopdb': looking up stream 'customers' at postgresql" in said


def test_connectors_describe_lists_a_tables_columns_with_types_and_samples(
    sqlite_harness: SqlHarness,
) -> None:
    from typer.testing import CliRunner

    from syncbridge.cli import app

    sqlite_harness.put(people(1, 3))
    config = sqlite_harness.dir / "config.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{sqlite_harness.dir / "cache.db"}"\n'
        f'[[sources]]\nname = "shopdb"\nconnector = "sql"\nurl = "{sqlite_harness.url}"\n'
        f'[[sources.streams]]\nname = "customers"\ntable = "{sqlite_harness.name}"\n'
        'cursor_field = "updated_at"\nmapping = "customers.toml"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app, ["connectors", "describe", "shopdb", "customers", "-c", str(config)],
        terminal_width=200,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "VARCHAR(200)" in rows["email"] and "person1@gmail.com" in rows["email"]
    assert "DATETIME" in rows["updated_at"] and "2026-03-01T12:00:01Z" in rows["updated_at"]
    assert "100%" in rows["deleted_at"]  # never set in the sample


@pytest.fixture
def server_harness(tmp_path: Path) -> Any:
    url = os.environ.get("SYNCBRIDGE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SYNCBRIDGE_TEST_POSTGRES_URL is not set")
    harness = SqlHarness(tmp_path, url)
    yield harness
    harness.close()


def test_a_producer_killed_mid_read_leaves_no_session_holding_the_table(
    server_harness: SqlHarness,
) -> None:
    """A forked producer reads on connections of its own: killed mid-read, its session ends
    with it. (It once read on the connection the parent had opened to look the table up; the
    parent kept that socket open, so the session stayed in its transaction, holding a lock,
    and a DROP TABLE waited forever.)"""
    import multiprocessing

    server_harness.put(people(1, 30))
    stream = _stream(server_harness, page_size=5)
    stream.source()  # the parent looks the table up: a pooled connection, as validate does

    def read_one_page_then_die() -> None:
        pages = stream.read(None)
        next(pages)
        os._exit(0)  # killed mid-read, `pages` still open: nothing is closed

    child = multiprocessing.get_context("fork").Process(target=read_one_page_then_die)
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with server_harness.db.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '5s'"))
        conn.execute(text(f"LOCK TABLE {server_harness.name} IN ACCESS EXCLUSIVE MODE"))
