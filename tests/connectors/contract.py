"""The contract every connector passes: subclass `ConnectorContract`, give it a harness.

A harness drives one fake source (files on disk, a stateful API fake): it adds, changes and
deletes people, can break one record or the credentials, and says how a config reaches it.
The tests are about what a user relies on, whatever the source: a full read, an incremental
read from the saved cursor, a restart after a crash mid-stream with no loss and no duplicate
profile, deletes, an empty source, a malformed record reported as a per-record error, and bad
credentials stopping the run with a clear message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from syncbridge import ingest
from syncbridge.config.loader import Settings
from syncbridge.connectors import build_connector
from syncbridge.cursors import goes_back
from syncbridge.errors import FatalError
from syncbridge.pipeline import run_cycle
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Profile, RecordErrorRow, SourceRecord, StreamCursor

R = SourceRecord.__table__.c
P = Profile.__table__.c
E = RecordErrorRow.__table__.c
C = StreamCursor.__table__.c


class Harness(ABC):
    """One fake source for the contract tests."""

    secret: str = ""
    """A credential the harness uses; it must never appear in an error."""

    @abstractmethod
    def put(self, people: list[dict[str, Any]]) -> None:
        """Create or update people: {"id", "email", "first_name"} (ids are the source's keys)."""

    def put_older(self, people: list[dict[str, Any]]) -> None:
        """Create or update people with a cursor value older than any read so far (a late
        export, a clock behind). Sources without a cursor value just put them."""
        self.put(people)

    @abstractmethod
    def delete(self, ids: list[str]) -> None:
        """Delete people at the source."""

    @abstractmethod
    def break_record(self, person_id: str) -> str:
        """Make one record malformed (a bad value, or an unparseable row); return what the
        per-record error should name to find it (the record's key, or a file and line)."""

    @abstractmethod
    def break_credentials(self) -> None:
        """Make the source refuse access (or be unreachable)."""

    @abstractmethod
    def settings(self, store_url: str) -> Settings:
        """Settings with this source, its stream(s) paged small, and the given store."""

    page_size: int = 10


def people(start: int, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"P{i:04d}", "email": f"person{i}@gmail.com", "first_name": f"Name{i}", **extra}
        for i in range(start, start + count)
    ]


class ConnectorContract:
    """Subclass with a `harness` fixture; every test below then runs against that connector."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Any:
        engine = open_engine(f"sqlite:///{tmp_path / 'contract.db'}")
        yield engine
        engine.dispose()

    def run(self, harness: Harness, engine: Engine) -> Any:
        return run_cycle(harness.settings(str(engine.url)), engine)

    @staticmethod
    def live_records(engine: Engine) -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).where(R.deleted.is_(False))).scalar_one()

    @staticmethod
    def live_profiles(engine: Engine) -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).where(P.deleted.is_(False))).scalar_one()

    def test_full_read(self, harness: Harness, store: Engine) -> None:
        harness.put(people(1, 25))
        report = self.run(harness, store)
        assert report.totals.inserted == 25
        assert self.live_records(store) == 25 and self.live_profiles(store) == 25

    def test_incremental_read_from_the_saved_cursor(self, harness: Harness, store: Engine) -> None:
        harness.put(people(1, 25))
        self.run(harness, store)
        harness.put([{"id": "P0003", "email": "person3@gmail.com", "first_name": "Changed"}])
        harness.put(people(100, 2))
        report = self.run(harness, store)
        assert (report.totals.inserted, report.totals.updated) == (2, 1)
        # whatever was read again (a file export is read whole) cost a comparison, no write
        assert report.totals.unchanged == report.totals.read - 3
        with store.connect() as conn:
            name = conn.execute(
                select(P.attributes).where(P.email == "person3@gmail.com")
            ).scalar_one()["first_name"]
        assert name == "Changed"

    def test_restart_after_a_crash_mid_stream_loses_and_duplicates_nothing(
        self, harness: Harness, store: Engine
    ) -> None:
        total = 3 * harness.page_size + 5
        harness.put(people(1, total))
        writes = 0

        def crash_on_third_page(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            nonlocal writes
            if statement.replace('"', "").lstrip().upper().startswith("INSERT INTO SOURCE_RECORD"):
                writes += 1
                if writes == 3:
                    raise RuntimeError("power cut")

        event.listen(store, "before_cursor_execute", crash_on_third_page)
        with pytest.raises(RuntimeError, match="power cut"):
            self.run(harness, store)
        event.remove(store, "before_cursor_execute", crash_on_third_page)
        self.run(harness, store)
        assert self.live_records(store) == total and self.live_profiles(store) == total
        with store.connect() as conn:
            keys = conn.execute(select(R.external_id)).scalars().all()
        assert len(keys) == len(set(keys))

    def test_deletes_reach_the_cache(self, harness: Harness, store: Engine) -> None:
        harness.put(people(1, 12))
        self.run(harness, store)
        harness.delete(["P0002", "P0005"])
        report = self.run(harness, store)
        assert report.totals.deleted == 2
        assert self.live_records(store) == 10 and self.live_profiles(store) == 10

    def test_empty_source_is_not_an_error(self, harness: Harness, store: Engine) -> None:
        report = self.run(harness, store)
        assert report.status == "ok" and report.totals.inserted == 0
        assert self.live_records(store) == 0

    def test_malformed_record_is_a_per_record_error_and_the_rest_loads(
        self, harness: Harness, store: Engine
    ) -> None:
        harness.put(people(1, 8))
        where = harness.break_record("P0004")
        self.run(harness, store)
        with store.connect() as conn:
            errors = conn.execute(select(RecordErrorRow.__table__)).mappings().all()
        assert [e for e in errors if where in str(e["external_id"]) and e["message"]]
        assert self.live_records(store) >= 7  # everything else loaded

    def test_bad_credentials_stop_the_run_clearly(self, harness: Harness, store: Engine) -> None:
        harness.put(people(1, 3))
        settings = harness.settings(str(store.url))
        harness.break_credentials()
        with pytest.raises(FatalError) as info:
            run_cycle(settings, store)
        message = str(info.value)
        assert message.strip()
        if harness.secret:
            assert harness.secret not in message

    @staticmethod
    def state(engine: Engine) -> dict[str, Any]:
        """What a run leaves in the cache, without ids and times."""
        with engine.connect() as conn:
            return {
                "records": sorted(conn.execute(select(R.external_id, R.content_hash, R.deleted,
                                                      R.attributes)).all(), key=str),
                "profiles": sorted(conn.execute(select(P.email, P.deleted)).all(), key=str),
                "errors": sorted(conn.execute(select(E.external_id, E.field, E.value,
                                                     E.message)).all(), key=str),
                "cursors": sorted(conn.execute(select(C.source, C.stream, C.value)).all(),
                                  key=str),
            }  # fmt: skip

    def test_a_repeated_page_changes_nothing(
        self, harness: Harness, store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every page reaches the engine twice (a retried call, a restart): the cache ends as
        after one delivery, with no record, profile or error twice."""
        harness.put(people(1, 2 * harness.page_size + 3))
        harness.break_record("P0004")
        once_store = open_engine(f"sqlite:///{tmp_path / 'once.db'}")
        once = self.run(harness, once_store)
        write = ingest._StreamWriter.write

        def twice(writer: Any, page: Any) -> None:
            write(writer, page)
            write(writer, page)

        monkeypatch.setattr(ingest._StreamWriter, "write", twice)
        repeated = self.run(harness, store)
        monkeypatch.undo()
        assert self.state(store) == self.state(once_store)
        assert (repeated.totals.inserted, repeated.totals.updated, repeated.totals.errors) == (
            once.totals.inserted, once.totals.updated, once.totals.errors)  # fmt: skip
        once_store.dispose()

    @staticmethod
    def positions(harness: Harness, engine: Engine) -> list[Any]:
        """Each stream's saved high-water mark, as the engine compares it."""
        settings = harness.settings(str(engine.url))
        found = []
        for source in settings.config.sources:
            for stream in build_connector(source, settings.config.base_dir).streams():
                found.append(stream.position(ingest.load_cursor(engine, source.name, stream.name)))
        return found

    def test_the_cursor_never_goes_back(self, harness: Harness, store: Engine) -> None:
        harness.put(people(1, 5))
        self.run(harness, store)
        before = self.positions(harness, store)
        harness.put_older(people(50, 3))
        self.run(harness, store)
        after = self.positions(harness, store)
        assert not [(b, a) for b, a in zip(before, after, strict=True) if goes_back(b, a)]
