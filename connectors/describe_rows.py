"""What a stream holds, for writing its mapping: columns (or JSON paths), a type, how often
each is empty, and a sample value, from the stream's first rows (a file's, a table's).

`syncbridge connectors describe SOURCE STREAM` shows it; mappings name columns exactly as the
source spells them, and JSON fields by dotted path (`traits.email`), as listed here.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncbridge.errors import FatalError

SAMPLE_ROWS = 200
"""Rows looked at: enough to find a non-empty sample of most columns, cheap on any file."""
_SAMPLE_WIDTH = 60

_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")
_DATE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}.*)?")
_BOOLEAN = {"true", "false", "yes", "no", "y", "n"}


def describe(
    rows: Iterator[dict[str, Any]], order: list[str], types: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One entry per column: name, type (the source's, else a guess from the values), empty
    (share of sampled rows), sample."""
    seen: dict[str, list[str]] = {name: [] for name in order}
    total = 0
    for row in rows:
        total += 1
        for name, value in row.items():
            seen.setdefault(name, []).append("" if value is None else str(value).strip())
        if total >= SAMPLE_ROWS:
            break
    fields = []
    for name, values in seen.items():
        filled = [v for v in values if v]
        empty = 1 - len(filled) / total if total else 1.0
        sample = filled[0] if filled else ""
        if len(sample) > _SAMPLE_WIDTH:
            sample = sample[: _SAMPLE_WIDTH - 1] + "…"
        kind = (types or {}).get(name) or _guess(filled)
        fields.append({"name": name, "type": kind, "empty": f"{empty:.0%}", "sample": sample})
    return fields


def _guess(values: list[str]) -> str:
    if not values:
        return "empty"
    lowered = {v.lower() for v in values}
    if lowered <= _BOOLEAN:
        return "boolean"
    if lowered <= {"0", "1"}:
        return "boolean (0/1) or number"
    if all(_NUMBER.fullmatch(v.replace(",", "")) for v in values):
        return "number"
    if all(_DATE.fullmatch(v) for v in values):
        return "date/time"
    return "text"


def csv_rows(fh: Any, delimiter: str) -> tuple[list[str], Iterator[dict[str, Any]]]:
    reader = csv.reader(fh, delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]

    def rows() -> Iterator[dict[str, Any]]:
        for row in reader:
            if not any(cell.strip() for cell in row):
                return  # a blank line ends the data (report footers follow it)
            yield dict(zip(header, row, strict=False))

    return header, rows()


def jsonl_rows(fh: Any, path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FatalError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
        if isinstance(record, dict):
            yield dict(flatten(record))


def flatten(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths, as mappings name them; lists are shown whole."""
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{path}.")
        elif isinstance(value, list):
            yield path, json.dumps(value, ensure_ascii=False) if value else ""
        else:
            yield path, value
