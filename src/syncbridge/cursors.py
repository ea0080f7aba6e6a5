"""Cursor values compared as what they are, never as text: the one place that does it.

A cursor's high-water mark is a moment. Compared as text, `10:00:05Z` sorts after
`10:00:05.500Z` and `N/A` after every date, so a text high-water mark can move back (rows
read twice, harmless) or jump past every later row (rows skipped for good, the worst a sync can
do). Connectors parse cursor values here; the engine (`ingest.py`) asks a stream for the
position of the cursor it is about to save and refuses one that goes back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .cleaning import format_datetime, parse_datetime


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


def later(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two moments (None is "no mark yet")."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b > a else a


def goes_back(before: datetime | None, after: datetime | None) -> bool:
    """True when saving `after` over `before` would move a high-water mark back (or lose it)."""
    return before is not None and (after is None or after < before)


__all__ = ["cursor_moment", "cursor_text", "goes_back", "later", "stored_moment"]
