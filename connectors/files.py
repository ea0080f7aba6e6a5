"""File connector: CSV and JSON Lines exports, one file or a folder of files per stream.

Incremental by file fingerprint (size and modification time): an unchanged file is not read at
all, a changed one is read whole and unchanged rows cost only a hash comparison in the engine.
With `cursor_field`, rows older than the saved cursor are skipped. With `snapshot = true` the
export is taken as complete, so rows that disappear from it are deleted.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncbridge.cleaning import format_datetime, parse_datetime
from syncbridge.connectors import Connector, Page, Stream, StreamOptions
from syncbridge.errors import FatalError

csv.field_size_limit(16 * 1024 * 1024)
KEY = "__key__"
"""Where a stream whose primary key needs cleaning puts the cleaned key on each record."""


class KeyField(BaseModel):
    """One part of a primary key, shaped like a mapping's field spec: `field` is a column, or a
    list of columns of which the first non-empty counts (a gift-card line has no SKU, so
    `["Lineitem sku", "Lineitem name"]`); `strip_chars` removes characters around the value
    (Shopify's `'` before ids) so the key is the same whether an export has it or not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str | list[str] = Field(min_length=1)
    strip_chars: str | None = None

    @property
    def fields(self) -> list[str]:
        return [self.field] if isinstance(self.field, str) else list(self.field)

    def read(self, record: dict[str, Any]) -> str | None:
        for name in self.fields:
            value = record.get(name)
            text = "" if value is None else str(value).strip()
            if self.strip_chars:
                text = text.strip(self.strip_chars).strip()
            if text:
                return text
        return None


class FileStreamOptions(StreamOptions):
    path: str
    format: Literal["auto", "csv", "jsonl"] = "auto"
    pattern: str = "*"
    primary_key: list[str | KeyField] = Field(min_length=1)
    """Columns, or `KeyField` tables for parts that need cleaning or a fallback column."""
    cursor_field: str | None = None
    cursor_format: str | None = None
    cursor_timezone: str | None = None
    encoding: str = "utf-8-sig"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    stop_at_blank_row: bool = False
    snapshot: bool = False
    page_size: int = Field(default=5000, ge=1, le=100_000)

    @field_validator("primary_key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | dict) else value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            "".encode(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @model_validator(mode="after")
    def _snapshot_reads_everything(self) -> FileStreamOptions:
        if self.snapshot and self.cursor_field:
            raise ValueError("a snapshot stream reads every row; it cannot also use cursor_field")
        return self


def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")  # type: ignore[return-value]
    return path.open("r", encoding=encoding, newline="")


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


class FileStream(Stream):
    def __init__(self, options: FileStreamOptions, base_dir: Path) -> None:
        self.options = options
        self.name = options.name
        parts = options.primary_key
        # A key that needs cleaning is computed here into `KEY`; plain columns are read as is.
        cleaned = any(isinstance(p, KeyField) for p in parts)
        self.key_parts: list[KeyField] = (
            [p if isinstance(p, KeyField) else KeyField(field=p) for p in parts] if cleaned else []
        )
        self._key_columns = tuple(
            n for p in parts for n in ([p] if isinstance(p, str) else p.fields)
        )
        self.primary_key = (KEY,) if self.key_parts else tuple(self._key_columns)
        self.cursor_field = options.cursor_field
        self.snapshot = options.snapshot
        path = Path(options.path).expanduser()
        self.path = path if path.is_absolute() else base_dir / path

    @property
    def key_columns(self) -> tuple[str, ...]:
        return self._key_columns

    def files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.glob(self.options.pattern) if p.is_file())
        if self.path.is_file():
            return [self.path]
        raise FatalError(f"stream {self.name!r}: {self.path} does not exist")

    def columns(self) -> Sequence[str] | None:
        files = self.files()
        if not files or _format_of(files[0], self.options.format) != "csv":
            return None
        try:
            with _open_text(files[0], self.options.encoding) as fh:
                header = next(csv.reader(fh, delimiter=self.options.delimiter), [])
        except UnicodeDecodeError as exc:
            raise FatalError(
                f"{files[0]}: not {self.options.encoding} text ({exc.reason})"
            ) from None
        return [h.strip() for h in header]

    # -- reading -------------------------------------------------------------------------------

    def read(self, cursor: Any | None) -> Iterator[Page]:
        state = dict(cursor or {})
        seen_files: dict[str, str] = dict(state.get("files", {}))
        threshold = state.get("max")
        newest = threshold
        files = self.files()
        changed = [f for f in files if seen_files.get(self._name(f)) != self._fingerprint(f)]
        if self.snapshot and changed:
            changed = files
        if not changed:
            return
        buffer: list[dict[str, Any]] = []
        errors: list[tuple[str, str]] = []
        for index, path in enumerate(changed):
            for row in self._rows(path, errors):
                if self.cursor_field:
                    value = self._cursor_value(row.get(self.cursor_field))
                    if value is not None:
                        if threshold is not None and value < threshold:
                            continue
                        newest = value if newest is None or value > newest else newest
                buffer.append(row)
                if len(buffer) >= self.options.page_size:
                    yield Page(buffer, cursor, errors=errors)
                    buffer, errors = [], []
            seen_files = {**seen_files, self._name(path): self._fingerprint(path)}
            cursor = {"files": seen_files, "max": newest}
            last = index == len(changed) - 1
            if buffer or errors or last:
                yield Page(buffer, cursor, complete=last and self.snapshot, errors=errors)
                buffer, errors = [], []

    def _name(self, path: Path) -> str:
        return path.name if self.path.is_dir() else str(path.name)

    @staticmethod
    def _fingerprint(path: Path) -> str:
        stat = path.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def _cursor_value(self, raw: Any) -> str | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        try:
            moment = parse_datetime(raw, self.options.cursor_format, self.options.cursor_timezone)
        except ValueError:
            return str(raw)
        return format_datetime(moment)

    def _rows(self, path: Path, errors: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        try:
            with _open_text(path, self.options.encoding) as fh:
                if _format_of(path, self.options.format) == "jsonl":
                    yield from self._jsonl(path, fh, errors)
                else:
                    yield from self._csv(path, fh, errors)
        except UnicodeDecodeError as exc:
            raise FatalError(
                f"{path}: not {self.options.encoding} text at byte {exc.start} "
                '(set the stream\'s encoding, e.g. encoding = "cp1252")'
            ) from None

    def _csv(self, path: Path, fh: Any, errors: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        reader = csv.reader(fh, delimiter=self.options.delimiter)
        header = [h.strip() for h in next(reader, [])]
        width = len(header)
        for row in reader:
            if not "".join(row).strip():  # blank, or only whitespace
                if self.options.stop_at_blank_row:
                    return
                continue
            if len(row) > width:
                where = f"{path.name} line {reader.line_num}"
                errors.append((where, f"row has {len(row)} fields, the header has {width}"))
                continue
            record = dict(zip(header, row, strict=False))
            if self.key_parts and not self._keyed(record):
                errors.append((f"{path.name} line {reader.line_num}", self._no_key()))
                continue
            yield record

    def _jsonl(
        self, path: Path, fh: Any, errors: list[tuple[str, str]]
    ) -> Iterator[dict[str, Any]]:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append((f"{path.name} line {number}", f"invalid JSON: {exc.msg}"))
                continue
            if not isinstance(record, dict):
                errors.append((f"{path.name} line {number}", "a line must hold a JSON object"))
                continue
            if self.key_parts and not self._keyed(record):
                errors.append((f"{path.name} line {number}", self._no_key()))
                continue
            yield record

    def _keyed(self, record: dict[str, Any]) -> bool:
        """Put the cleaned primary key on the record; False when a part of it is empty."""
        values = []
        for part in self.key_parts:
            value = part.read(record)
            if value is None:
                return False
            values.append(value)
        record[KEY] = "|".join(values)  # the form of plain keys, so those keep their keys
        return True

    def _no_key(self) -> str:
        parts = ", ".join("|".join(p.fields) for p in self.key_parts)
        return f"record has no primary key value ({parts})"


class FileConnector(Connector):
    """Reads CSV / JSON Lines exports from local files."""

    stream_options = FileStreamOptions

    def streams(self) -> list[Stream]:
        return [FileStream(s, self.base_dir) for s in self.stream_configs]  # type: ignore[arg-type]
