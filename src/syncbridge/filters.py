"""Equality filters on field values, with one meaning wherever a config file writes one.

A mapping's `when = { type = "track" }` (on raw record fields) and a trait's or behaviour tag's
`where = { status = ["paid", "partially_refunded"] }` (on event properties) are both read by
`ValueFilter`, so the same table means the same thing in both places:

- a list means "one of these"; a single value means "this one";
- text compares without regard to case or surrounding spaces (as in the rule language);
- a number matches a number of the same value (`99` matches `99.0`); `true` matches `True`;
- a missing value is the empty text: it matches only `""`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().casefold()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class ValueFilter:
    """Does a value equal the expected value, or one of the expected values (a list)?"""

    __slots__ = ("numbers", "texts")

    def __init__(self, expected: Any) -> None:
        items = expected if isinstance(expected, list | tuple | set | frozenset) else [expected]
        self.texts = frozenset(_text(item) for item in items)
        self.numbers = frozenset(n for n in (_number(item) for item in items) if n is not None)

    def __call__(self, value: Any) -> bool:
        number = _number(value) if isinstance(value, int | float) else None
        return (number is not None and number in self.numbers) or _text(value) in self.texts


def compile_filters(where: Mapping[str, Any]) -> list[tuple[str, ValueFilter]]:
    """(field, filter) pairs for a `when` / `where` table."""
    return [(name, ValueFilter(expected)) for name, expected in where.items()]


def all_match(filters: Iterable[tuple[str, ValueFilter]], get: Callable[[str], Any]) -> bool:
    """True when every field's value (read with `get`) passes its filter."""
    return all(accepts(get(name)) for name, accepts in filters)


__all__ = ["ValueFilter", "all_match", "compile_filters"]
