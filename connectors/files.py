"""File connector: CSV and JSON Lines exports, one file or a folder of files per stream.

Incremental by file fingerprint (size and modification time): an unchanged file is not read at
all, a changed one is read whole and unchanged rows cost only a hash comparison in the engine.
With `cursor_field`, the stream declares a typed cursor: the engine keeps its high-water mark
(and reports values that do not parse), and rows older than the mark are skipped. With
`snapshot = true` the export is taken as complete, so rows that disappear from it are deleted.
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
import itertools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncbridge.connectors import Connector, Page, Stream, StreamOptions
from syncbridge.cursors import Cursor, CursorType, Resume
from syncbridge.errors import FatalError
from syncbridge.prepare import record_key

from . import describe_rows

MAX_CELL_SIZE = 16 * 1024 * 1024
csv.field_size_limit(MAX_CELL_SIZE)
log = logging.getLogger(__name__)
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
    cursor_type: CursorType = "datetime"
    """How cursor values compare: as moments ("datetime"), numbers ("number") or "text"."""
    cursor_format: str | None = None
    cursor_timezone: str | None = None
    encoding: str = "utf-8-sig"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    stop_at_blank_row: bool = False
    snapshot: bool = False
    page_size: int = Field(default=5000, ge=1, le=100_000)
    max_cell_size: int = Field(default=MAX_CELL_SIZE, ge=1024)
    """Characters a CSV cell may hold; a larger one is a per-record error, not a failed read."""
    max_cell_lines: int = Field(default=1000, ge=2)
    """Lines a quoted CSV cell may span before it is taken for a quote left open."""

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


def _position_of(fh: Any) -> Any:
    """How many bytes of the file on disk were read so far (for the progress share): the OS
    position under the text layer, or under gzip the compressed file's (read-ahead makes it a
    little early, which a percentage does not mind)."""
    layer = getattr(fh, "buffer", None)
    inner = getattr(layer, "fileobj", None) or getattr(layer, "raw", None) or layer
    try:
        descriptor = inner.fileno()
    except (AttributeError, OSError, ValueError):
        return lambda: 0
    return lambda: os.lseek(descriptor, 0, os.SEEK_CUR)


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
        self._position: Any = lambda: 0
        """Bytes of the file being read that were read so far (set when it is opened)."""
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
        self.cursor = (
            Cursor(options.cursor_field, options.cursor_type, options.cursor_format,
                   options.cursor_timezone)
            if options.cursor_field
            else None
        )  # fmt: skip
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

    def legacy_resume(self, stored: Any) -> Resume:
        """Before the engine kept the mark this stream stored `{"files": ..., "max": ...}`."""
        state = dict(stored) if isinstance(stored, dict) else {}
        saved = state.pop("max", None)
        mark = self.cursor.load(saved) if self.cursor is not None else None
        if saved is not None and mark is None and self.cursor is not None:
            log.warning("%s: the saved cursor %r is not a date/time; reading every row again",
                        self.name, saved)  # fmt: skip
        return Resume(mark, {"files": state.get("files", {})})

    def read(self, cursor: Any | None) -> Iterator[Page]:
        """Changed files, whole (rows older than the engine's mark skipped). The state saved
        beside the mark is the fingerprints of the files read; it is handed over once a file
        is read to its end (a checkpoint), since a file's rows are in no cursor order."""
        resume = cursor if isinstance(cursor, Resume) else self.resume(cursor)
        seen_files: dict[str, str] = dict((resume.state or {}).get("files", {}))
        threshold = resume.mark
        state = {"files": seen_files}
        files = self.files()
        # Taken before reading: a file replaced while it is read then differs from what is
        # saved for it, so the next read takes it again instead of missing the change.
        prints = {f: self._fingerprint(f) for f in files}
        changed = [f for f in files if seen_files.get(self._name(f)) != prints[f]]
        if self.snapshot and changed:
            changed = files
        if not changed:
            return
        buffer: list[dict[str, Any]] = []
        keys: list[str] = []
        errors: list[tuple[str, str]] = []
        # Where each key of this read was seen, to report a key that repeats: its line, or
        # (file, line) when a snapshot's keys are compared across several files.
        seen: dict[str, int | tuple[str, int]] = {}
        tag_files = self.snapshot and len(changed) > 1
        cursor_filter = self.cursor if self.cursor is not None and threshold is not None else None
        key_of = self._key if self.key_parts else partial(record_key, primary_key=self.primary_key)
        page_size = self.options.page_size
        sizes = [max(1, int(prints[f].split(":", 1)[0])) for f in changed]
        total, before = sum(sizes), 0  # bytes of the files to read, and of those read

        def share() -> float:
            return min(1.0, (before + self._position()) / total)

        for index, path in enumerate(changed):
            name = path.name
            if not self.snapshot:  # a later file of a folder is a newer export, not a repeat
                seen = {}
            for line, row in self._rows(path, errors):
                if cursor_filter is not None:
                    # a value that does not parse is never skipped; the engine reports it
                    value = cursor_filter.newest(row)
                    if value is not None and value < threshold:
                        continue
                key = key_of(row)
                if key is None:
                    errors.append((f"{name} line {line}", self._no_key()))
                    continue
                here = (name, line) if tag_files else line
                earlier = seen.setdefault(key, here)  # one lookup for the usual, new key
                if earlier is not here:  # (a file's lines differ, so `is` tells a new key)
                    seen[key] = here
                    errors.append(_repeat(key, earlier, here, name))
                buffer.append(row)
                keys.append(key)
                if len(buffer) >= page_size:
                    yield Page(buffer, state, errors=errors[:], checkpoint=False, keys=keys,
                               share=share())  # fmt: skip
                    buffer, keys = [], []
                    errors.clear()  # (the list `_rows` appends to: never a new one)
            seen_files = {**seen_files, self._name(path): prints[path]}
            state = {"files": seen_files}
            before += sizes[index]
            last = index == len(changed) - 1
            if buffer or errors or last:
                complete = last and self.snapshot
                yield Page(buffer, state, complete=complete, errors=errors[:], keys=keys,
                           share=before / total)  # fmt: skip
                buffer, keys = [], []
                errors.clear()
            else:
                yield Page([], state)

    def _name(self, path: Path) -> str:
        return path.name if self.path.is_dir() else str(path.name)

    @staticmethod
    def _fingerprint(path: Path) -> str:
        stat = path.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def _key(self, record: dict[str, Any]) -> str | None:
        """The key of a record of a stream whose key needs cleaning (see `_keyed`)."""
        return record[KEY] if self._keyed(record) else None

    def _rows(
        self, path: Path, errors: list[tuple[str, str]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line, record) pairs of one file; what cannot be a record goes to `errors`."""
        try:
            with _open_text(path, self.options.encoding) as fh:
                self._position = _position_of(fh)
                if _format_of(path, self.options.format) == "jsonl":
                    yield from self._jsonl(path, fh, errors)
                else:
                    yield from self._csv(path, fh, errors)
        except UnicodeDecodeError as exc:
            raise FatalError(_decode_problem(path, self.options.encoding, exc)) from None

    def _csv(
        self, path: Path, fh: Any, errors: list[tuple[str, str]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows as records, numbered by their first line. The reader counts the lines it takes
        (`line_num`); a shadow of its input (`itertools.tee`, which buffers in C) keeps those
        lines, so that only a record of several lines (rare) is looked at line by line, to tell
        a real multi-line cell from a quote left open, at no Python cost per line."""
        csv.field_size_limit(self.options.max_cell_size)
        feed = _Feed(iter(fh), self.options.delimiter)
        reader = feed.reader
        header = [h.strip() for h in next(reader, [])]
        width = len(header)
        line = reader.line_num + 1  # the number of the next record's first line
        taken_so_far = reader.line_num
        stop_at_blank = self.options.stop_at_blank_row
        while True:
            try:
                for row in reader:
                    count = reader.line_num - taken_so_far
                    taken_so_far += count
                    first = line
                    line += count
                    if count > 1:
                        taken = feed.last(count, taken_so_far)
                        if self._runaway(row, taken, width):
                            errors.append(
                                (f"{path.name} line {first}", _runaway_message(first, taken))
                            )
                            # the swallowed lines are rows: read them
                            reader, taken_so_far, line = feed.again(taken), 0, first + 1
                            break
                    elif taken_so_far - feed.released > 4096:
                        feed.release(taken_so_far)
                    if not "".join(row).strip():  # blank, or only whitespace
                        if stop_at_blank:
                            return
                        continue
                    if len(row) > width:
                        where = f"{path.name} line {first}"
                        errors.append((where, f"row has {len(row)} fields, the header has {width}"))
                        continue
                    yield first, dict(zip(header, row, strict=False))
                else:
                    return
            except csv.Error as exc:  # the reader goes on at the next line
                taken = feed.last(reader.line_num - taken_so_far, reader.line_num)
                errors.append((f"{path.name} line {line}", self._unreadable(exc, line, taken)))
                reader, taken_so_far, line = feed.again(taken), 0, line + 1

    def _runaway(self, row: list[str], taken: list[str], width: int) -> bool:
        """A quoted cell spanning lines is a quote left open when it spans more than
        `max_cell_lines`, or when every line it swallowed reads, on its own, as a row of the
        header's width (a real note or address line almost never holds that many delimiters).
        The cell's last line counts too unless the cell is the row's first: then that line
        ends with the rest of a real row and proves nothing."""
        if len(taken) > self.options.max_cell_lines:
            return True
        column = next((i for i, cell in enumerate(row) if "\n" in cell or "\r" in cell), None)
        if column is None or width < 2:
            return False
        swallowed = taken[1:] if column > 0 else taken[1:-1]
        delimiter = self.options.delimiter
        return bool(swallowed) and all(
            len(next(csv.reader([line], delimiter=delimiter), [])) == width for line in swallowed
        )

    def _unreadable(self, exc: csv.Error, first: int, taken: list[str]) -> str:
        text = str(exc)
        if "field larger than field limit" in text:
            limit = self.options.max_cell_size
            text = f"a cell holds more than {limit} characters (the stream's max_cell_size)"
        else:
            text = f"unreadable CSV: {text}"
        if len(taken) > 1:
            text += f"; lines {first + 1}-{first + len(taken) - 1} are read again as rows"
        return text

    def _jsonl(
        self, path: Path, fh: Any, errors: list[tuple[str, str]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = _loads(line)
            except json.JSONDecodeError as exc:
                errors.append((f"{path.name} line {number}", f"invalid JSON: {exc.msg}"))
                continue
            except RecursionError:
                errors.append((f"{path.name} line {number}", "JSON nested too deeply to read"))
                continue
            if not isinstance(record, dict):
                errors.append((f"{path.name} line {number}", "a line must hold a JSON object"))
                continue
            yield number, record

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
        parts = ", ".join("|".join(p.fields) for p in self.key_parts) or ", ".join(self.primary_key)
        return f"record has no primary key value ({parts})"


def _loads(line: str) -> Any:
    """orjson (several times faster); what it refuses goes to the standard parser, whose
    reading (NaN, integers beyond 64 bits) and error messages the stream has always had."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


class _Feed:
    """The lines under a csv reader, with a shadow that keeps them until released: the file's,
    after any handed out again (rows a quote left open swallowed, or that follow a cell too
    large), which go to a new reader (the old one's input may have ended with the file)."""

    def __init__(self, source: Iterator[str], delimiter: str) -> None:
        self.source, self.delimiter = source, delimiter
        self._pending: Iterator[str] = iter(())
        self.reader = self._start(source)

    def _start(self, lines: Iterator[str]) -> Any:
        feed, self._shadow = itertools.tee(lines)
        self.released = 0  # lines of this reader the shadow no longer holds
        return csv.reader(feed, delimiter=self.delimiter)

    def release(self, upto: int) -> None:
        """Let go of the lines before line `upto` of this reader."""
        collections.deque(itertools.islice(self._shadow, upto - self.released), maxlen=0)
        self.released = upto

    def last(self, count: int, upto: int) -> list[str]:
        """The `count` lines the reader took before line `upto` (the last it took)."""
        self.release(upto - count)
        taken = list(itertools.islice(self._shadow, count))
        self.released = upto
        return taken

    def again(self, taken: list[str]) -> Any:
        """A new reader over the lines after a record's first, then the rest of the file."""
        # The old reader took no line beyond its record, so what its input still holds is
        # the rest of the lines handed out again before, then the file.
        self._pending = iter(taken[1:] + list(self._pending))
        return self._start(itertools.chain(self._pending, self.source))


def _repeat(
    key: str, earlier: int | tuple[str, int], later: int | tuple[str, int], name: str
) -> tuple[str, str]:
    """(where, why) of a key seen again: lines are of the file `name` unless tagged with theirs."""
    first = f"{name} line {earlier}" if isinstance(earlier, int) else "{} line {}".format(*earlier)
    where = f"{name} line {later}" if isinstance(later, int) else "{} line {}".format(*later)
    # The later line wins, as a later upsert would: an export lists a record's newer state after.
    why = f"primary key {key!r} appears again at {where}; that later row is kept, this one is not"
    return first, why


def _runaway_message(first: int, taken: list[str]) -> str:
    last = first + len(taken) - 1
    return (
        f"a quote opened on this line is not closed before line {last}; this row is skipped "
        f"and lines {first + 1}-{last} are read as rows"
    )


def _decode_problem(path: Path, encoding: str, exc: UnicodeDecodeError) -> str:
    """Where the first undecodable byte is, by line and byte offset in the file (a text
    reader's own offset counts from the start of its last chunk), and the encoding to try."""
    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    with opener(path, "rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as bad:
                byte = line[bad.start]
                try:
                    line.decode("cp1252")
                    guess = "cp1252"
                except UnicodeDecodeError:
                    guess = "latin-1"
                return (
                    f"{path}: line {number}, byte offset {offset + bad.start}: byte "
                    f"0x{byte:02X} is not {encoding} text; if the file was saved on Windows "
                    f'or by Excel, set the stream\'s encoding = "{guess}"'
                )
            offset += len(line)
    return f"{path}: not {encoding} text ({exc.reason}); set the stream's encoding"


class FileConnector(Connector):
    """Reads CSV / JSON Lines exports from local files."""

    stream_options = FileStreamOptions

    def streams(self) -> list[Stream]:
        return [FileStream(s, self.base_dir) for s in self.stream_configs]  # type: ignore[arg-type]

    def describe(self, obj: str) -> list[dict[str, Any]]:
        """The columns (or JSON paths) of stream `obj`'s first file, with a sample of each."""
        stream = self.stream_named(obj)
        assert isinstance(stream, FileStream)
        files = stream.files()
        if not files:
            raise FatalError(f"stream {obj!r}: no file matches {stream.path}")
        options = stream.options
        try:
            with _open_text(files[0], options.encoding) as fh:
                if _format_of(files[0], options.format) == "jsonl":
                    return describe_rows.describe(describe_rows.jsonl_rows(fh, files[0]), [])
                header, rows = describe_rows.csv_rows(fh, options.delimiter)
                return describe_rows.describe(rows, header)
        except UnicodeDecodeError as exc:
            raise FatalError(_decode_problem(files[0], options.encoding, exc)) from None
