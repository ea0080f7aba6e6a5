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

    def _stamp(self) -> str:
        self.clock += 1
        return f"2026-11-20T10:{self.clock // 60:02d}:{self.clock % 60:02d}Z"

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
