"""Typed cursors: a stream declares its cursor field and type; the engine keeps the mark.

A cursor's high-water mark is a moment, a number or a text, and is compared as what it is,
never as text: compared as text, `10:00:05Z` sorts after `10:00:05.500Z`, `9` after `10` and
`N/A` after every date, so a text high-water mark can move back (rows read twice, harmless) or
jump past every later row (rows skipped for good, the worst a sync can do).

A stream declares a `Cursor` (as singer-sdk's `replication_key` and dlt's `Incremental` do).
The engine (`ingest.py`) parses the cursor value of every record it is handed, keeps the
newest as the stream's mark, never moves it back, and reports a value that does not parse as a
per-record error (the record loads; the mark does not move). It saves the mark beside the
connector's own state (file fingerprints, say) as `{"mark": ..., "state": ...}` and hands both
back to `read()` as a `Resume`. This module is the one place that parses and compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from .cleaning import format_datetime, parse_datetime

CursorType = Literal["datetime", "number", "text"]
Mark = datetime | int | Decimal | str
"""A parsed cursor value: a UTC moment, a number (int, or Decimal with fractions) or a text."""


@dataclass(frozen=True)
class Cursor:
    """What a stream's cursor is: a record field, its type, and how to read its values."""

    field: str
    type: CursorType = "datetime"
    format: str | None = None
    """A strptime format for datetime values that are not ISO 8601 (e.g. `%m/%d/%Y %I:%M %p`)."""
    timezone: str | None = None
    """The zone naive datetime values are in (default UTC)."""

    def parse(self, value: Any) -> Mark:
        """The value as this cursor's type; ValueError (with the reason) when it is not one."""
        if self.type == "datetime":
            return parse_datetime(value, self.format, self.timezone)
        if self.type == "number":
            return _number(value)
        if not isinstance(value, str):
            raise ValueError(f"not a text ({type(value).__name__})")
        return value

    def value_of(self, record: dict[str, Any]) -> Mark | None:
        """The record's cursor value, None when it has none (missing or blank); ValueError
        when it has one that does not parse."""
        raw = record.get(self.field)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        return self.parse(raw)

    def newest(self, record: dict[str, Any]) -> Mark | None:
        """`value_of`, with a value that does not parse taken as none (for filtering: a row
        whose value cannot be placed is never skipped)."""
        try:
            return self.value_of(record)
        except ValueError:
            return None

    def dump(self, mark: Mark | None) -> Any:
        """The mark as saved (JSON): ISO 8601 UTC text, an integer, decimal text, or text."""
        if mark is None:
            return None
        if isinstance(mark, datetime):
            return format_datetime(mark)
        if isinstance(mark, Decimal):
            return str(mark)
        return mark

    def load(self, saved: Any) -> Mark | None:
        """A saved mark, or None when none is saved or the saved one does not parse (a mark
        an older version stored as text): then nothing is skipped."""
        if saved is None:
            return None
        try:  # a saved moment is ISO 8601 in UTC (`dump`), whatever the source's format
            return parse_datetime(saved) if self.type == "datetime" else self.parse(saved)
        except ValueError:
            return None


@dataclass(frozen=True)
class Resume:
    """What the engine hands `read()` of a stream with a declared cursor: the mark (typed;
    None on a first read) and the state the connector saved beside it with its last page."""

    mark: Mark | None = None
    state: Any = None


def saved_form(cursor: Cursor, mark: Mark | None, state: Any) -> dict[str, Any]:
    """The stored cursor of a stream with a declared cursor."""
    return {"mark": cursor.dump(mark), "state": state}


def is_saved_form(value: Any) -> bool:
    """True for a cursor stored by `saved_form` (older stored shapes are the connector's)."""
    return isinstance(value, dict) and set(value) == {"mark", "state"}


def _number(value: Any) -> int | Decimal:
    if isinstance(value, bool):
        raise ValueError("not a number (a boolean)")
    if isinstance(value, int):
        return value
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite():
        raise ValueError("not a finite number")
    return int(number) if number == number.to_integral_value() else number


def cursor_moment(value: Any, fmt: str | None = None, timezone: str | None = None) -> datetime:
    """A cursor value as a UTC moment; ValueError (with the reason) when it is not one."""
    return parse_datetime(value, fmt, timezone)


def stored_moment(value: Any) -> datetime | None:
    """A saved high-water mark (ISO 8601 text, as `cursor_text` writes it), or None when none
    is saved or the saved one is not a moment (a mark an older version stored as text)."""
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


def cursor_text(moment: datetime | None) -> str | None:
    """The form a high-water mark is saved in (JSON-friendly ISO 8601, UTC)."""
    return None if moment is None else format_datetime(moment)


def later(a: Any, b: Any) -> Any:
    """The later (greater) of two marks of one type (None is "no mark yet")."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b > a else a


def goes_back(before: Any, after: Any) -> bool:
    """True when saving `after` over `before` would move a high-water mark back (or lose it)."""
    return before is not None and (after is None or after < before)


__all__ = [
    "Cursor",
    "CursorType",
    "Mark",
    "Resume",
    "cursor_moment",
    "cursor_text",
    "goes_back",
    "is_saved_form",
    "later",
    "saved_form",
    "stored_moment",
]
