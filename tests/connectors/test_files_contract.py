"""The file connector passes the connector contract."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from syncbridge.config.loader import Settings

from ..builders import settings_from
from .contract import ConnectorContract, Harness

MAPPING = """
[identifiers]
email = "Email"
external = { "crm:contact" = "Id" }
[attributes]
first_name = "First Name"
signed_up = { field = "Signed Up", type = "date" }
"""
HEADER = ["Id", "Email", "First Name", "Signed Up"]


class FilesHarness(Harness):
    """A full CSV export per read (a snapshot stream, as Shopify and CRM exports are)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.path = tmp_path / "exports" / "people.csv"
        self.rows: dict[str, dict[str, str]] = {}
        (tmp_path / "people.toml").write_text(MAPPING, encoding="utf-8")
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, HEADER)
            writer.writeheader()
            writer.writerows(self.rows.values())

    def put(self, people: list[dict[str, Any]]) -> None:
        for p in people:
            self.rows[p["id"]] = {"Id": p["id"], "Email": p["email"],
                                  "First Name": p["first_name"], "Signed Up": "2026-01-15"}  # fmt: skip
        self._write()

    def delete(self, ids: list[str]) -> None:
        for i in ids:
            self.rows.pop(i, None)
        self._write()

    def break_record(self, person_id: str) -> str:
        self.rows[person_id]["Signed Up"] = "the fifteenth"
        self._write()
        return person_id

    def break_credentials(self) -> None:
        self.path.unlink()  # files have no credentials: the closest failure is a missing export

    def settings(self, store_url: str) -> Settings:
        data = {
            "store": {"url": store_url},
            "sources": [{"name": "files", "connector": "files", "streams": [{
                "name": "people", "path": str(self.path), "primary_key": "Id",
                "snapshot": True, "page_size": self.page_size, "mapping": "people.toml"}]}],
        }  # fmt: skip
        return settings_from(data, self.dir)


class TestFileConnectorContract(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> FilesHarness:
        return FilesHarness(tmp_path)


JSONL_MAPPING = """
[record]
timestamp = { field = "updated_at", type = "datetime" }
deleted = { field = "deleted", type = "boolean" }
[identifiers]
email = "email"
external = { "app:user" = "id" }
[attributes]
first_name = "first_name"
"""


class IncrementalJsonlHarness(Harness):
    """A folder of JSON Lines change exports: each batch a new file, deletes as flagged rows."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.folder = tmp_path / "changes"
        self.folder.mkdir()
        self.batch = 0
        self.clock = 0
        (tmp_path / "users.toml").write_text(JSONL_MAPPING, encoding="utf-8")

    def _emit(self, lines: list[str]) -> None:
        self.batch += 1
        (self.folder / f"changes-{self.batch:04d}.jsonl").write_text(
            "".join(lines), encoding="utf-8"
        )

    def _stamp(self, fraction: str = ".500") -> str:
        self.clock += 1
        return f"2026-11-20T10:{self.clock // 60:02d}:{self.clock % 60:02d}{fraction}Z"

    def put_older(self, people: list[dict[str, Any]]) -> None:
        # Half a second before the newest stamp, without the fraction: later *as text*.
        import json

        self.clock -= 1
        self._emit([json.dumps({**p, "updated_at": self._stamp("")}) + "\n" for p in people])

    def put(self, people: list[dict[str, Any]]) -> None:
        import json

        self._emit([json.dumps({**p, "updated_at": self._stamp()}) + "\n" for p in people])

    def delete(self, ids: list[str]) -> None:
        import json

        self._emit([json.dumps({"id": i, "deleted": True, "updated_at": self._stamp()}) + "\n"
                    for i in ids])  # fmt: skip

    def break_record(self, person_id: str) -> str:
        self._emit(['{"id": "' + person_id + '", "email": \n'])
        return f"changes-{self.batch:04d}.jsonl line 1"

    def break_credentials(self) -> None:
        import shutil

        shutil.rmtree(self.folder)

    def settings(self, store_url: str) -> Settings:
        data = {
            "store": {"url": store_url},
            "sources": [{"name": "app", "connector": "files", "streams": [{
                "name": "users", "path": str(self.folder), "pattern": "*.jsonl",
                "primary_key": "id", "cursor_field": "updated_at", "page_size": self.page_size,
                "mapping": "users.toml"}]}],
        }  # fmt: skip
        return settings_from(data, self.dir)


class TestIncrementalJsonlContract(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> IncrementalJsonlHarness:
        return IncrementalJsonlHarness(tmp_path)


class QuotedKeyHarness(FilesHarness):
    """Shopify-style ids (`'7101116718867`) keyed with `strip_chars`: the contract still holds."""

    def put(self, people: list[dict[str, Any]]) -> None:
        super().put(people)
        for p in people:
            self.rows[p["id"]]["Id"] = f"'{p['id']}"
        self._write()

    def settings(self, store_url: str) -> Settings:
        data = {
            "store": {"url": store_url},
            "sources": [{"name": "files", "connector": "files", "streams": [{
                "name": "people", "path": str(self.path),
                "primary_key": {"field": "Id", "strip_chars": "'"},
                "snapshot": True, "page_size": self.page_size, "mapping": "people.toml"}]}],
        }  # fmt: skip
        return settings_from(data, self.dir)


class TestQuotedKeyContract(ConnectorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> QuotedKeyHarness:
        return QuotedKeyHarness(tmp_path)


# -- primary keys that need cleaning (issue 11, point 8) -----------------------------------------

EMAIL_MAPPING = '[identifiers]\nemail = "Email"\n'


def _stream(tmp_path: Path, rows: list[list[str]], primary_key: Any) -> Any:
    from syncbridge.connectors import build_connector

    tmp_path.mkdir(exist_ok=True)
    with (tmp_path / "export.csv").open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    (tmp_path / "m.toml").write_text(EMAIL_MAPPING, encoding="utf-8")
    data = {
        "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "sources": [{"name": "shop", "connector": "files", "streams": [{
            "name": "orders", "path": "export.csv", "primary_key": primary_key,
            "mapping": "m.toml"}]}],
    }  # fmt: skip
    settings = settings_from(data, tmp_path)
    return build_connector(settings.config.sources[0], tmp_path).streams()[0]


def _keys(stream: Any) -> tuple[list[str | None], list[tuple[str, str]]]:
    from syncbridge.prepare import record_key

    keys, errors = [], []
    for page in stream.read(None):
        keys += [record_key(r, stream.primary_key) for r in page.records]
        errors += page.errors
    return keys, errors


def test_strip_chars_on_a_primary_key_gives_the_same_key_with_or_without_the_quote(
    tmp_path: Path,
) -> None:
    header = ["Customer ID", "Email"]
    quoted = _stream(tmp_path, [header, ["'7000003164353", "a@x.io"]],
                     {"field": "Customer ID", "strip_chars": "'"})  # fmt: skip
    plain = _stream(tmp_path / "again", [header, ["7000003164353", "a@x.io"]],
                    [{"field": "Customer ID", "strip_chars": "'"}])  # fmt: skip
    assert _keys(quoted) == (["7000003164353"], []) == _keys(plain)


LINES = [
    ["Name", "Email", "Total", "Lineitem name", "Lineitem sku"],
    ["#1001", "a@x.io", "70.00", "Gift Card - $50", ""],  # gift cards have no SKU
    ["#1001", "", "", "Trail Runner - Blue / 42", "TR-2041-BLU-42"],
    ["#1002", "b@x.io", "20.00", "Gift Card - $20", ""],
]


def test_a_fallback_key_column_keeps_lines_without_a_sku(tmp_path: Path) -> None:
    stream = _stream(tmp_path, LINES, ["Name", {"field": ["Lineitem sku", "Lineitem name"]}])
    keys, errors = _keys(stream)
    assert keys == ["#1001|Gift Card - $50", "#1001|TR-2041-BLU-42", "#1002|Gift Card - $20"]
    assert errors == []


def test_a_row_without_any_key_value_is_reported_with_its_line(tmp_path: Path) -> None:
    rows = [*LINES, ["", "c@x.io", "1.00", "Gift Card - $1", ""]]
    stream = _stream(tmp_path, rows, ["Name", {"field": ["Lineitem sku", "Lineitem name"]}])
    keys, errors = _keys(stream)
    assert len(keys) == 3
    assert errors == [("export.csv line 5",
                       "record has no primary key value (Name, Lineitem sku|Lineitem name)")]  # fmt: skip


def test_validate_checks_every_column_a_key_spec_reads(tmp_path: Path) -> None:
    from syncbridge.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _stream(tmp_path, LINES, ["Name", {"field": ["Lineitem SKU", "Lineitem name"]}])
    text = "\n".join(str(p) for p in info.value.problems)
    assert "primary_key: unknown column 'Lineitem SKU'; did you mean 'Lineitem sku'?" in text


# -- bad files: reported, never lost silently (issue 11, points 1-4) ---------------------------


def _raw_stream(tmp_path: Path, name: str, data: bytes | str, **options: Any) -> Any:
    """A stream over one file written byte for byte (what csv.writer cannot produce)."""
    from syncbridge.connectors import build_connector

    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    (tmp_path / "m.toml").write_text(EMAIL_MAPPING, encoding="utf-8")
    stream = {"name": "people", "path": name, "primary_key": "Id", "mapping": "m.toml", **options}
    data_ = {"store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
             "sources": [{"name": "files", "connector": "files", "streams": [stream]}]}  # fmt: skip
    settings = settings_from(data_, tmp_path)
    return build_connector(settings.config.sources[0], tmp_path).streams()[0]


def _read(stream: Any, cursor: Any = None) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    records, errors = [], []
    for page in stream.read(cursor):
        records += page.records
        errors += page.errors
    return records, errors


RUNAWAY = (
    "Id,Email,Note\n"
    "1,a@x.io,fine\n"
    '2,b@x.io,"the quote of this note is never closed\n'  # line 3
    "3,c@x.io,fine\n"
    "4,d@x.io,fine\n"
    "5,e@x.io,\n"
    '6,f@x.io,"quoted, and closed"\n'  # line 7: its opening quote ends the runaway cell
    "7,g@x.io,fine\n"
)


def test_a_quote_left_open_is_reported_and_the_rows_it_swallowed_load(tmp_path: Path) -> None:
    records, errors = _read(_raw_stream(tmp_path, "export.csv", RUNAWAY))
    assert [r["Id"] for r in records] == ["1", "3", "4", "5", "6", "7"]
    assert records[4]["Note"] == "quoted, and closed"
    assert errors == [("export.csv line 3", "a quote opened on this line is not closed before "
                       "line 7; this row is skipped and lines 4-7 are read as rows")]  # fmt: skip


def test_a_quote_left_open_to_the_end_of_the_file_is_reported_too(tmp_path: Path) -> None:
    text = 'Id,Email,Note\n1,a@x.io,"open\n2,b@x.io,x\n3,c@x.io,y\n'
    records, errors = _read(_raw_stream(tmp_path, "export.csv", text))
    assert [r["Id"] for r in records] == ["2", "3"]
    assert [w for w, _ in errors] == ["export.csv line 2"]


def test_quotes_left_open_twice_and_deep_in_a_long_file_are_each_located(
    tmp_path: Path,
) -> None:
    """The second open quote lies among the lines the first one swallowed (they are read
    again), and both lie past the first page and past the lines the reader lets go of as it
    goes (errors found after a page was handed over were once lost with it)."""
    rows = [f"{i},p{i}@x.io,fine\n" for i in range(1, 10_001)]  # lines 2..10001
    rows[9_000] = '9001,p9001@x.io,"open once\n'  # line 9002
    rows[9_002] = '9003,p9003@x.io,"open twice\n'  # line 9004, swallowed by the first
    text = "Id,Email,Note\n" + "".join(rows)
    records, errors = _read(_raw_stream(tmp_path, "export.csv", text, max_cell_lines=5))
    ids = [int(r["Id"]) for r in records]
    assert ids == [i for i in range(1, 10_001) if i not in (9001, 9003)]
    assert [w for w, _ in errors] == ["export.csv line 9002", "export.csv line 9004"]
    assert records[-1] == {"Id": "10000", "Email": "p10000@x.io", "Note": "fine"}


def test_a_cell_spanning_more_than_max_cell_lines_is_taken_for_an_open_quote(
    tmp_path: Path,
) -> None:
    text = 'Id,Email,Note\n1,a@x.io,"open\nx\ny\nz"\n2,b@x.io,ok\n'
    records, errors = _read(_raw_stream(tmp_path, "export.csv", text, max_cell_lines=3))
    assert errors[0][0] == "export.csv line 2" and "not closed before line 5" in errors[0][1]
    assert "2" in [r["Id"] for r in records]  # the row after the run-on loads


def test_real_multi_line_cells_still_load(tmp_path: Path) -> None:
    """Shopify's Note column, a two-line address, and a note in the first column whose last
    line ends with a whole row's worth of cells: none is a quote left open."""
    notes = ["Prefers email.\nCall before 5pm, not on weekends.", "Line one\n\nLine three"]
    rows = [["Id", "Email", "Address", "Note"],
            ["1", "a@x.io", "12 Main St\nApt 4", notes[0]],
            ["2", "b@x.io", "", notes[1]],
            ["3", "c@x.io", "x", "VIP, wholesale, net 30\nsee contract, p. 4, item 2"]]  # fmt: skip
    stream = _stream(tmp_path, rows, "Id")
    records, errors = _read(stream)
    assert errors == []
    assert [r["Note"] for r in records][:2] == notes and records[0][
        "Address"
    ] == "12 Main St\nApt 4"
    first = [["Note", "Id", "Email"], ["Gift wrap\nplease,1,a@x.io", "1", "a@x.io"]]
    again = _stream(tmp_path / "first", first, "Id")
    assert _read(again) == (
        [{"Note": "Gift wrap\nplease,1,a@x.io", "Id": "1", "Email": "a@x.io"}],
        [],
    )


def test_a_repeated_primary_key_names_both_lines_and_the_later_row_wins(tmp_path: Path) -> None:
    text = "Id,Email\n1,old@x.io\n2,b@x.io\n1,new@x.io\n"
    records, errors = _read(_raw_stream(tmp_path, "export.csv", text))
    assert errors == [("export.csv line 2", "primary key '1' appears again at export.csv line 4; "
                       "that later row is kept, this one is not")]  # fmt: skip
    from syncbridge.connectors import Page
    from syncbridge.prepare import prepare_page

    kept = prepare_page(Page(records, None), ("Id",)).records
    assert sorted(r.payload for r in kept) == ['{"Email":"b@x.io","Id":"2"}',
                                               '{"Email":"new@x.io","Id":"1"}']  # fmt: skip


def test_a_repeated_key_across_a_snapshot_folder_is_reported_but_not_across_change_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "parts"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("Id,Email\n1,a@x.io\n", encoding="utf-8")
    (folder / "b.csv").write_text("Id,Email\n2,b@x.io\n1,a2@x.io\n", encoding="utf-8")
    snapshot = _raw_stream(tmp_path, "unused.csv", "Id\n", path="parts", snapshot=True)
    assert _read(snapshot)[1] == [("a.csv line 2", "primary key '1' appears again at b.csv "
                                   "line 3; that later row is kept, this one is not")]  # fmt: skip
    changes = _raw_stream(tmp_path, "unused.csv", "Id\n", path="parts")
    assert _read(changes)[1] == []  # a later change file is the newer state of the record


def test_a_cell_over_the_size_limit_is_a_per_record_error_and_the_rest_loads(
    tmp_path: Path,
) -> None:
    huge = "x" * (20 * 1024 * 1024)
    text = f"Id,Email,Note\n1,a@x.io,ok\n2,b@x.io,{huge}\n3,c@x.io,ok\n"
    records, errors = _read(_raw_stream(tmp_path, "export.csv", text))
    assert [r["Id"] for r in records] == ["1", "3"]
    assert errors == [("export.csv line 3", "a cell holds more than 16777216 characters "
                       "(the stream's max_cell_size)")]  # fmt: skip


def test_a_deeply_nested_json_line_is_a_per_record_error_and_the_rest_loads(
    tmp_path: Path,
) -> None:
    deep = '{"Id": "2", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    text = f'{{"Id": "1"}}\n{deep}\n{{"Id": "3"}}\n'
    records, errors = _read(_raw_stream(tmp_path, "export.jsonl", text))
    assert [r["Id"] for r in records] == ["1", "3"]
    assert errors == [("export.jsonl line 2", "JSON nested too deeply to read")]


def test_a_cp1252_byte_deep_in_a_utf8_file_is_located_by_line_and_byte(tmp_path: Path) -> None:
    from syncbridge.errors import FatalError

    lines = [b"Id,Email\n"] + [b"%d,person%d@x.io\n" % (i, i) for i in range(1, 2000)]
    lines[1500] = b"1500,Ren\xe9e@x.io\n"  # an e-acute saved by Excel on Windows
    offset = sum(len(line) for line in lines[:1500]) + len(b"1500,Ren")
    with pytest.raises(FatalError) as info:
        _read(_raw_stream(tmp_path, "export.csv", b"".join(lines)))
    message = str(info.value)
    assert f"line 1501, byte offset {offset}: byte 0xE9 is not utf-8-sig text" in message
    assert 'encoding = "cp1252"' in message


def _cursor_stream(tmp_path: Path, text: str) -> Any:
    return _raw_stream(tmp_path, "changes.csv", text, cursor_field="Updated")


def _ingest(tmp_path: Path, stream: Any) -> tuple[Any, Any]:
    """Read the stream into the cache at tmp_path/c.db: (stats, saved cursor)."""
    from syncbridge.config.loader import load_mapping
    from syncbridge.ingest import StreamIngest, ingest_stream, load_cursor
    from syncbridge.store.engine import open_engine
    from syncbridge.transform import RecordTransformer

    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    transformer = RecordTransformer(load_mapping(tmp_path / "m.toml"))
    stats = ingest_stream(engine, StreamIngest("files", stream, transformer))
    saved = load_cursor(engine, "files", stream.name)
    engine.dispose()
    return stats, saved


def _errors(tmp_path: Path) -> list[tuple[Any, ...]]:
    from sqlalchemy import create_engine, select

    from syncbridge.store.tables import RecordErrorRow

    e = RecordErrorRow.__table__.c
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(select(e.external_id, e.field, e.message))]
    engine.dispose()
    return found


def test_an_unparseable_cursor_value_is_a_per_record_error_and_never_moves_the_cursor(
    tmp_path: Path,
) -> None:
    text = ("Id,Email,Updated\n1,a@x.io,2026-11-20T10:00:00Z\n2,b@x.io,N/A\n"
            "3,c@x.io,2026-11-20T11:00:00Z\n")  # fmt: skip
    stream = _cursor_stream(tmp_path, text)
    records, errors = _read(stream)
    assert [r["Id"] for r in records] == ["1", "2", "3"] and errors == []  # the engine reports
    stats, saved = _ingest(tmp_path, stream)
    assert stats.inserted == 3  # the row's data is fine: it loads
    assert _errors(tmp_path) == [("2", "Updated", "cursor field 'Updated': 'N/A' is not a "
            "date/time in ISO 8601; the record loads but does not move the stream's high-water "
            "mark")]  # fmt: skip
    assert saved["mark"] == "2026-11-20T11:00:00Z"
    later_rows = text + "4,d@x.io,2026-11-21T09:00:00Z\n"
    (tmp_path / "changes.csv").write_text(later_rows, encoding="utf-8")
    # nothing is skipped for good; the N/A row cannot be placed, so it is read again, which
    # costs a hash comparison (and reports nothing twice: the record did not change)
    assert [r["Id"] for r in _read(stream, saved)[0]] == ["2", "3", "4"]
    stats, saved = _ingest(tmp_path, stream)
    assert (stats.read, stats.inserted, stats.errors) == (3, 1, 0)
    assert saved["mark"] == "2026-11-21T09:00:00Z" and len(_errors(tmp_path)) == 1


def test_cursor_values_compare_as_moments_not_text(tmp_path: Path) -> None:
    # As text "10:00:05Z" sorts after "10:00:05.500Z"; as moments it is half a second before.
    text = "Id,Email,Updated\n1,a@x.io,2026-11-20T10:00:05.500Z\n"
    stream = _cursor_stream(tmp_path, text)
    _ingest(tmp_path, stream)
    (tmp_path / "changes.csv").write_text(text + "2,b@x.io,2026-11-20T10:00:05Z\n", "utf-8")
    stats, saved = _ingest(tmp_path, stream)
    assert stats.read == 1  # only row 1 (at the mark); row 2 is older: skipped
    assert saved["mark"] == "2026-11-20T10:00:05.500Z"


def test_a_saved_cursor_that_is_not_a_moment_does_not_skip_rows(tmp_path: Path) -> None:
    text = "Id,Email,Updated\n1,a@x.io,2026-11-20T10:00:00Z\n"
    stream = _cursor_stream(tmp_path, text)
    assert [r["Id"] for r in _read(stream, {"files": {}, "max": "N/A"})[0]] == ["1"]


def test_a_file_replaced_while_it_is_read_is_read_again_next_time(tmp_path: Path) -> None:
    """The fingerprint saved for a file is the one it had when its read began: an export
    replaced mid-read (an atomic rename by the exporting job) is not taken for read."""
    import os

    rows = "Id,Email\n" + "".join(f"{i},p{i}@x.io\n" for i in range(1, 30))
    stream = _raw_stream(tmp_path, "export.csv", rows, page_size=10)
    pages = stream.read(None)
    first = next(pages)
    newer = tmp_path / "export.new"
    newer.write_text(rows + "99,late@x.io\n", encoding="utf-8")
    os.replace(newer, tmp_path / "export.csv")  # the exporter's next file, mid-read
    rest = list(pages)
    assert sum(len(p.records) for p in [first, *rest]) == 29  # the file as it was opened
    again, _ = _read(stream, rest[-1].cursor)
    assert "99" in [r["Id"] for r in again]
