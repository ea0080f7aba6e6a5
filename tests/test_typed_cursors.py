"""Typed cursors owned by the engine (issue 12, point 5): a stream declares its cursor field and
type; the engine keeps the high-water mark from the records, never moves it back, and reports
values that do not parse as errors of their records, which still load."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from syncbridge.connectors import Page
from syncbridge.cursors import Cursor, Resume
from syncbridge.ingest import StreamIngest, ingest_stream, ingest_streams, load_cursor
from syncbridge.pipeline import run_cycle
from syncbridge.store.tables import RecordErrorRow, StreamCursor
from syncbridge.transform import RecordTransformer

from .builders import settings_from
from .streams import PERSON_MAPPING, ListStream

E = RecordErrorRow.__table__.c
C = StreamCursor.__table__.c


class DeclaredStream(ListStream):
    """Declares a cursor and computes nothing: its pages carry no cursor (the state is None),
    each page a list of records as given. It remembers what `read()` was handed."""

    def __init__(self, pages: list[list[dict[str, Any]]], cursor: Cursor, **page: Any) -> None:
        super().__init__("people", [])
        self.pages, self.cursor, self.page = pages, cursor, page
        self.cursor_field = cursor.field
        self.handed: list[Any] = []

    def read(self, cursor: Any | None) -> Iterator[Page]:
        self.handed.append(cursor)
        for records in self.pages:
            yield Page([dict(r) for r in records], None, **self.page)


def person(i: int, value: Any, field: str = "updated") -> dict[str, Any]:
    return {"id": str(i), "email": f"p{i}@x.io", field: value}


def ingest(engine: Engine, stream: Any, parallel: bool = False) -> Any:
    job = StreamIngest("src", stream, RecordTransformer(PERSON_MAPPING), parallel=parallel)
    return ingest_streams(engine, [job], workers=1)[0]


def errors(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(select(E.external_id, E.field, E.value, E.message)).all()
    return sorted((tuple(r) for r in rows), key=str)


@pytest.mark.parametrize("parallel", [False, True], ids=["local", "producer"])
def test_the_engine_computes_the_mark_from_the_records(engine: Engine, parallel: bool) -> None:
    pages = [[person(1, "2026-11-20T10:00:00Z"), person(2, "2026-11-20T12:30:00+02:00")],
             [person(3, "2026-11-20T10:15:00Z"), person(4, None)]]  # fmt: skip
    stream = DeclaredStream(pages, Cursor("updated"))
    assert ingest(engine, stream, parallel).inserted == 4
    # 12:30+02:00 is 10:30Z: the newest as a moment, not as text
    assert load_cursor(engine, "src", "people") == {"mark": "2026-11-20T10:30:00Z", "state": None}
    ingest(engine, stream)
    assert stream.handed[-1] == Resume(datetime(2026, 11, 20, 10, 30, tzinfo=UTC), None)


def test_unparseable_values_are_errors_of_their_records_and_never_move_the_mark(
    engine: Engine,
) -> None:
    pages = [[person(1, "2026-11-20T10:00:00Z", "changed"), person(2, "N/A", "changed"),
              person(3, "9999-99-99", "changed")]]  # fmt: skip
    stream = DeclaredStream(pages, Cursor("changed"))
    assert ingest(engine, stream).inserted == 3  # the records load
    assert load_cursor(engine, "src", "people")["mark"] == "2026-11-20T10:00:00Z"
    why = ("cursor field 'changed': {!r} is not a date/time in ISO 8601; the record loads but "
           "does not move the stream's high-water mark")  # fmt: skip
    assert errors(engine) == [("2", "changed", "N/A", why.format("N/A")),
                              ("3", "changed", "9999-99-99", why.format("9999-99-99"))]  # fmt: skip
    ingest(engine, stream)  # read again, unchanged: reported once, not twice
    assert len(errors(engine)) == 2


def test_the_mark_never_moves_back(engine: Engine) -> None:
    ingest(engine, DeclaredStream([[person(1, "2026-11-20T10:00:00Z")]], Cursor("updated")))
    older = DeclaredStream([[person(2, "2026-11-20T09:00:00Z")], [person(3, "2026-11-19")]],
                           Cursor("updated"))  # fmt: skip
    assert ingest(engine, older).inserted == 2  # a late export's records are stored
    assert load_cursor(engine, "src", "people")["mark"] == "2026-11-20T10:00:00Z"


def test_number_cursors_compare_as_numbers(engine: Engine) -> None:
    number = Cursor("seq", "number")
    pages = [[person(1, "9", "seq"), person(2, "10", "seq"), person(3, 9.5, "seq")]]
    ingest(engine, DeclaredStream(pages, number))
    assert load_cursor(engine, "src", "people")["mark"] == 10  # as text, "9" > "10"
    ingest(engine, DeclaredStream([[person(4, "9", "seq"), person(5, "ten", "seq")]], number))
    assert load_cursor(engine, "src", "people")["mark"] == 10
    assert [e[:3] for e in errors(engine)] == [("5", "seq", "ten")]
    ingest(engine, DeclaredStream([[person(6, "10.25", "seq")]], number))
    assert load_cursor(engine, "src", "people")["mark"] == "10.25"  # exact, as decimal text
    assert number.load("10.25") > 10  # type: ignore[operator]


def test_a_number_cursor_refuses_booleans_and_text_cursors_compare_as_text() -> None:
    with pytest.raises(ValueError, match="not a number"):
        Cursor("seq", "number").parse(True)
    text = Cursor("version", "text")
    assert text.parse("v10") < text.parse("v9")


def test_the_mark_moves_only_at_a_checkpoint(engine: Engine) -> None:
    """Pages not in cursor order (a half-read file, a bulk job) save nothing: a crash after
    the first would otherwise leave a mark past the records of the pages still to come."""
    pages = [[person(1, "2026-11-20T12:00:00Z")], [person(2, "2026-11-20T09:00:00Z")]]
    stream = DeclaredStream(pages, Cursor("updated"), checkpoint=False)
    ingest(engine, stream)
    assert load_cursor(engine, "src", "people") is None

    class Ends(DeclaredStream):
        def read(self, cursor: Any | None) -> Iterator[Page]:
            yield from super().read(cursor)
            yield Page([], {"done": True})

    ingest(engine, Ends(pages, Cursor("updated"), checkpoint=False))
    assert load_cursor(engine, "src", "people") == {"mark": "2026-11-20T12:00:00Z",
                                                    "state": {"done": True}}  # fmt: skip


# -- older stored shapes are still read: the next run goes on incrementally --------------------


def _files_project(tmp_path: Path, store_url: str, **options: Any) -> Any:
    (tmp_path / "m.toml").write_text('[identifiers]\nemail = "Email"\n', encoding="utf-8")
    stream = {
        "name": "people",
        "path": "people.csv",
        "primary_key": "Id",
        "mapping": "m.toml",
        "cursor_field": "Updated",
        **(options or {"cursor_format": "%m/%d/%Y %H:%M"}),
    }
    data = {"store": {"url": store_url},
            "sources": [{"name": "files", "connector": "files", "streams": [stream]}]}  # fmt: skip
    return settings_from(data, tmp_path)


def _write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Id", "Email", "Updated"])
        writer.writerows(rows)


def _set_cursor(engine: Engine, source: str, stream: str, value: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(StreamCursor.__table__).where(C.source == source, C.stream == stream)
                     .values(value=value))  # fmt: skip


def test_an_old_file_cursor_row_goes_on_incrementally(
    tmp_path: Path, store_url: str, engine: Engine
) -> None:
    path = tmp_path / "people.csv"
    _write(path, [("1", "a@x.io", "11/20/2026 10:00"), ("2", "b@x.io", "11/20/2026 11:00")])
    settings = _files_project(tmp_path, store_url)
    run_cycle(settings, engine)
    stat = path.stat()
    # the shape the file connector stored before the engine kept the mark
    _set_cursor(engine, "files", "people", {"files": {"people.csv": f"{stat.st_size}:"
                f"{stat.st_mtime_ns}"}, "max": "2026-11-20T11:00:00Z"})  # fmt: skip
    assert run_cycle(settings, engine).totals.read == 0  # unchanged file: not read again
    _write(path, [("1", "a@x.io", "11/20/2026 10:00"), ("2", "b@x.io", "11/20/2026 11:00"),
                  ("3", "c@x.io", "11/21/2026 08:00")])  # fmt: skip
    report = run_cycle(settings, engine)
    assert (report.totals.read, report.totals.inserted) == (2, 1)  # row 1 is older: skipped
    saved = load_cursor(engine, "files", "people")
    assert saved["mark"] == "2026-11-21T08:00:00Z" and "people.csv" in saved["state"]["files"]


def test_an_old_salesforce_cursor_row_goes_on_incrementally(tmp_path: Path, engine: Engine) -> None:
    from syncbridge_connectors.salesforce import SalesforceConnector

    from .connectors.test_salesforce import sf_settings
    from .fakes.salesforce import FakeSalesforce

    with FakeSalesforce() as fake, pytest.MonkeyPatch.context() as patch:
        patch.setattr(SalesforceConnector, "session_factory", staticmethod(fake.http_session))
        fake.set_clock(datetime(2026, 11, 20, 8, 0, tzinfo=UTC))
        for i in range(5):
            fake.insert("Contact", Email=f"c{i}@gmail.com", LastName=f"L{i}")
        fake.set_clock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
        fake.insert("Contact", Email="newest@gmail.com", LastName="Newest")
        settings = sf_settings(fake, tmp_path, str(engine.url))
        run_cycle(settings, engine)
        _set_cursor(engine, "salesforce", "Contact", "2026-11-20T09:00:00Z")  # the old shape
        fake.set_clock(datetime(2026, 11, 20, 11, 0, tzinfo=UTC))
        fake.insert("Contact", Email="late@gmail.com", LastName="Late")
        report = run_cycle(settings, engine)
    # from the old mark less the overlap: the 09:00 record again and the new one, not all 7
    assert (report.totals.read, report.totals.inserted) == (2, 1)
    assert load_cursor(engine, "salesforce", "Contact") == {"mark": "2026-11-20T11:00:00Z",
                                                            "state": None}  # fmt: skip


def test_a_stream_without_a_declared_cursor_keeps_its_own(engine: Engine) -> None:
    class Own(ListStream):
        def read(self, cursor: Any | None) -> Iterator[Page]:
            yield Page([person(1, "x")], {"page": 1})

    ingest_stream(engine, StreamIngest("src", Own("people", []), RecordTransformer(PERSON_MAPPING)))
    assert load_cursor(engine, "src", "people") == {"page": 1}  # saved as given


def test_a_file_stream_with_a_number_cursor_skips_rows_below_the_mark(
    tmp_path: Path, store_url: str, engine: Engine
) -> None:
    path = tmp_path / "people.csv"
    _write(path, [("1", "a@x.io", "9"), ("2", "b@x.io", "10")])
    settings = _files_project(tmp_path, store_url, cursor_type="number")
    run_cycle(settings, engine)
    assert load_cursor(engine, "files", "people")["mark"] == 10
    _write(path, [("1", "a@x.io", "9"), ("2", "b@x.io", "10"), ("3", "c@x.io", "11")])
    assert run_cycle(settings, engine).totals.read == 2  # 10 (at the mark) and 11; 9 skipped
    assert load_cursor(engine, "files", "people")["mark"] == 11


def test_status_shows_the_engine_mark_and_the_files_seen(
    tmp_path: Path, store_url: str, engine: Engine
) -> None:
    from syncbridge.views import status

    _write(tmp_path / "people.csv", [("1", "a@x.io", "11/20/2026 10:00")])
    run_cycle(_files_project(tmp_path, store_url), engine)
    [row] = status(engine).streams
    assert row["cursor"] == "mark 2026-11-20T10:00:00Z, 1 file(s) seen"
