"""Evaluates parsed rules against one profile: a pure function of the profile's data and now.

Besides the answer, evaluation reports the earliest future moment at which the answer could
change with no new data (a `within 30d` condition running out, an event leaving a window):
that is the profile's next expiry, which the scheduler uses instead of rescanning everyone.
"""

from __future__ import annotations

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


def evaluate(rule: Rule, facts: Facts) -> bool:
    return bool(_eval(rule.tree, facts))


def _eval(node: Any, facts: Facts) -> bool:
    match node:
        case All(parts):
            return all([_eval(p, facts) for p in parts])  # every part: collect all expiries
        case Any_(parts):
            return any([_eval(p, facts) for p in parts])
        case Not(inner):
            return not _eval(inner, facts)
        case HasTag(name):
            return name.lower() in {t.lower() for t in facts.tags}
        case InSegment(name):
            return name in facts.segments
        case Truthy(value):
            return bool(_value(value, facts))
        case Exists(value):
            found = _value(value, facts)
            return found is not None and found != ""
        case Compare(left, op, right):
            return _compare(_value(left, facts), op, _value(right, facts))
        case Member(value, options, negate):
            found = _value(value, facts)
            if found is None:
                return negate
            hit = any(_compare(found, "=", option) for option in options)
            return hit != negate
        case Contains(value, part, negate):
            found, wanted = _value(value, facts), _value(part, facts)
            if found is None or wanted is None:
                return negate
            if isinstance(found, list | tuple | set):
                hit = any(_compare(item, "=", wanted) for item in found)
            else:
                hit = str(wanted).casefold() in str(found).casefold()
            return hit != negate
        case Within(value, window, older):
            moment = as_time(_value(value, facts))
            if moment is None:
                return False
            facts.expire_at(moment + window)
            inside = facts.now - window <= moment
            return not inside if older else inside
    raise TypeError(f"unknown rule node {node!r}")


def _value(node: Any, facts: Facts) -> Any:
    match node:
        case Literal(value):
            return value
        case Path(name):
            return _lookup(facts.values, name)
        case Count(event, where, window):
            times = facts.events(event, where, window)
            if window is not None and times:
                facts.expire_at(min(times) + window)
            return len(times)
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
