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
