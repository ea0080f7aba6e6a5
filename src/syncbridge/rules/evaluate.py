"""Evaluates parsed rules against one profile: a pure function of the profile's data and now.

Besides the answer, evaluation reports the earliest future moment at which the answer could
change with no new data (a `within 30d` condition running out, an event leaving a window):
that is the profile's next expiry, which the scheduler uses instead of rescanning everyone.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .language import (
    All,
    Any_,
    Compare,
    Contains,
    Count,
    Exists,
    HasTag,
    InSegment,
    Literal,
    Member,
    Not,
    Path,
    Rule,
    Truthy,
    Within,
)

EventLookup = Callable[[str, tuple[tuple[str, str, Any], ...], timedelta | None], list[datetime]]
"""(event type, property filters, window) → times of the matching events inside the window."""


@dataclass
class Facts:
    """What rules can see about one profile."""

    now: datetime
    values: Mapping[str, Any]
    tags: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    events: EventLookup = lambda *_: []
    expiries: list[datetime] = field(default_factory=list)

    def expire_at(self, moment: datetime) -> None:
        if moment > self.now:
            self.expiries.append(moment)

    @property
    def next_expiry(self) -> datetime | None:
        return min(self.expiries) if self.expiries else None


Check = Callable[[Facts], bool]
Value = Callable[[Facts], Any]


def evaluate(rule: Rule, facts: Facts) -> bool:
    """Evaluate a parsed rule (compiled into closures on first use)."""
    check = rule.compiled
    if check is None:
        check = rule.compiled = compile_rule(rule.tree)
    return bool(check(facts))


def compile_rule(node: Any) -> Check:
    """Turn a syntax tree into nested closures: no per-evaluation dispatch on node types."""
    match node:
        case All(parts):
            checks = [compile_rule(p) for p in parts]
            return lambda f: all([c(f) for c in checks])  # every part: collect all expiries
        case Any_(parts):
            checks = [compile_rule(p) for p in parts]
            return lambda f: any([c(f) for c in checks])
        case Not(inner):
            check = compile_rule(inner)
            return lambda f: not check(f)
        case HasTag(name):
            wanted = name.casefold()
            return lambda f: any(t.casefold() == wanted for t in f.tags)
        case InSegment(name):
            return lambda f: name in f.segments
        case Truthy(value):
            get = compile_value(value)
            return lambda f: bool(get(f))
        case Exists(value):
            get = compile_value(value)
            return lambda f: (v := get(f)) is not None and v != ""
        case Compare(left, op, right):
            get_left, get_right = compile_value(left), compile_value(right)
            if isinstance(right, Literal) and type(right.value) in (int, float):
                return _number_check(get_left, op, right.value)
            return lambda f: _compare(get_left(f), op, get_right(f))
        case Member(value, options, negate):
            get = compile_value(value)

            def member(f: Facts) -> bool:
                found = get(f)
                if found is None:
                    return negate
                return any(_compare(found, "=", option) for option in options) != negate

            return member
        case Contains(value, part, negate):
            get, get_part = compile_value(value), compile_value(part)

            def contains(f: Facts) -> bool:
                found, wanted = get(f), get_part(f)
                if found is None or wanted is None:
                    return negate
                if isinstance(found, list | tuple | set):
                    hit = any(_compare(item, "=", wanted) for item in found)
                else:
                    hit = str(wanted).casefold() in str(found).casefold()
                return hit != negate

            return contains
        case Within(value, window, older):
            get = compile_value(value)

            def within(f: Facts) -> bool:
                moment = as_time(get(f))
                if moment is None:
                    return False
                f.expire_at(moment + window)
                inside = f.now - window <= moment
                return not inside if older else inside

            return within
    raise TypeError(f"unknown rule node {node!r}")


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le,
}  # fmt: skip


def _number_check(get: Value, op: str, number: float) -> Check:
    """`x > 5000` and friends: numbers compare directly, anything else the general way."""
    compare = _OPS[op]

    def check(f: Facts) -> bool:
        value = get(f)
        if type(value) in (int, float):
            return compare(value, number)
        return _compare(value, op, number)

    return check


def compile_value(node: Any) -> Value:
    match node:
        case Literal(value):
            return lambda f: value
        case Path(name):
            if "." not in name:
                return lambda f: f.values.get(name)
            return lambda f: _lookup(f.values, name)
        case Count(event, where, window):

            def count(f: Facts) -> int:
                times = f.events(event, where, window)
                if window is not None and times:
                    f.expire_at(min(times) + window)
                return len(times)

            return count
    raise TypeError(f"unknown value node {node!r}")


def _lookup(values: Mapping[str, Any], name: str) -> Any:
    if name in values:
        return values[name]
    node: Any = values
    for part in name.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def as_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is None or right is None:
        return op == "!=" and (left is None) != (right is None)
    if isinstance(left, bool) or isinstance(right, bool):
        left, right = bool(left), bool(right)
    elif _is_number(left) and _is_number(right):
        left, right = float(left), float(right)
    elif (lt := as_time(left)) is not None and (rt := as_time(right)) is not None:
        left, right = lt, rt
    else:
        left, right = str(left).casefold(), str(right).casefold()
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    try:
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]
    except TypeError:
        return False


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def matching_events(
    events: Iterable[tuple[str, datetime, Mapping[str, Any]]], now: datetime
) -> EventLookup:
    """An EventLookup over a profile's events held in memory: (type, time, properties)."""
    events = list(events)

    def lookup(
        event_type: str, where: tuple[tuple[str, str, Any], ...], window: timedelta | None
    ) -> list[datetime]:
        return [
            when
            for kind, when, props in events
            if kind == event_type
            and (window is None or now - window <= when <= now)
            and all(_compare(props.get(p), op, v) for p, op, v in where)
        ]

    return lookup
