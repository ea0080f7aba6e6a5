"""The segment rule language: a small, safe expression language (never `eval`).

    lifetime_value > 5000 and last_activity_at within 30d and engagement >= 0.5
    city = "New York" or region in ["NY", "NJ"]
    count(product_viewed within 24h) >= 1 and cart_value > 100
    count(purchase where category = "Shoes" within 90d) >= 2
    tag "VIP" and not segment "New customers"
    signed_up_at older than 1y and not last_order_at exists

Operators: `and`, `or`, `not`, parentheses; comparisons `= != > >= < <=`; `in [..]`;
`contains`; `exists`; `within <duration>` and `older than <duration>` for times; `count(event
[where prop op value and ...] [within <duration>])`; `tag "name"`, `segment "name"`. Durations:
`m` minutes, `h` hours, `d` days, `w` weeks, `y` years (365 days). Text compares without regard to
case. A missing value makes a comparison false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

from ..errors import SyncbridgeError


class RuleError(SyncbridgeError):
    """A rule that does not parse: names the rule, the column and what was expected."""

    def __init__(self, rule: str, text: str, position: int, message: str) -> None:
        self.rule, self.position, self.reason = rule, position, message
        caret = " " * position + "^"
        super().__init__(f"rule {rule!r}, column {position + 1}: {message}\n  {text}\n  {caret}")


_DURATION = r"(\d+(?:\.\d+)?)([mhdwy])"
"""A duration: a number and its unit (`30d`, `1.5h`), in rule texts and rule-file options."""
_TOKEN = re.compile(
    rf"""(?P<space>\s+)
      | (?P<duration>{_DURATION}\b)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>>=|<=|!=|==|=|>|<)
      | (?P<punct>[()\[\],])
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    """,
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "contains", "exists", "within", "older", "than", "count",
            "where", "tag", "segment", "true", "false", "null"}  # fmt: skip
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
          "w": timedelta(weeks=1), "y": timedelta(days=365)}  # fmt: skip


@lru_cache(maxsize=256)
def parse_duration(text: str) -> timedelta:
    """`30d`, `24h`, `1.5w`, … as a timedelta: the one reading of a duration, for `within` and
    `older than` in rules and for the rule file's `within` and `delay` options."""
    match = re.fullmatch(_DURATION, text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 24h or 1y")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


def tokenize(rule: str, text: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise RuleError(rule, text, position, f"unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            value = match.group()
            if kind == "name" and value.lower() in KEYWORDS:
                kind, value = "keyword", value.lower()
            tokens.append(Token(kind, value, position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# -- the syntax tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Path:
    name: str


@dataclass(frozen=True)
class Count:
    event: str
    where: tuple[tuple[str, str, Any], ...]
    window: timedelta | None


@dataclass(frozen=True)
class Compare:
    left: Any
    op: str
    right: Any


@dataclass(frozen=True)
class Member:
    value: Any
    options: tuple[Any, ...]
    negate: bool


@dataclass(frozen=True)
class Contains:
    value: Any
    part: Any
    negate: bool


@dataclass(frozen=True)
class Exists:
    value: Any


@dataclass(frozen=True)
class Within:
    value: Any
    window: timedelta
    older: bool  # "older than" instead of "within"


@dataclass(frozen=True)
class HasTag:
    name: str


@dataclass(frozen=True)
class InSegment:
    name: str


@dataclass(frozen=True)
class Truthy:
    value: Any


@dataclass(frozen=True)
class Not:
    inner: Any


@dataclass(frozen=True)
class All:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Any_:
    parts: tuple[Any, ...]


@dataclass
class Rule:
    """A parsed rule; `segments`, `paths`, `tags` and `counts` list what it refers to (for
    dependency order, and for `syncbridge validate` to check every name against the setup)."""

    name: str
    text: str
    tree: Any
    segments: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    uses_events: bool = False
    """True when the rule counts events (so it cannot be re-evaluated from stored results)."""
    tags: set[str] = field(default_factory=set)
    counts: list[Count] = field(default_factory=list)
    """Every `count(...)`: the event types and properties the rule reads."""
    compiled: Any = field(default=None, repr=False, compare=False)
    """The tree compiled into closures (see evaluate.compile_rule), built on first use."""


class _Parser:
    def __init__(self, rule: str, text: str) -> None:
        self.rule, self.text = rule, text
        self.tokens = tokenize(rule, text)
        self.index = 0
        self.segments: set[str] = set()
        self.uses_events = False
        self.paths: set[str] = set()
        self.tags: set[str] = set()
        self.counts: list[Count] = []

    # token helpers
    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        token = self.peek
        if token.kind == kind and (text is None or token.text == text):
            return self.take()
        return None

    def expect(self, kind: str, text: str | None, what: str) -> Token:
        token = self.accept(kind, text)
        if token is None:
            self.fail(f"expected {what}")
        return token  # type: ignore[return-value]

    def fail(self, message: str, token: Token | None = None) -> None:
        token = token or self.peek
        found = "the end of the rule" if token.kind == "end" else repr(token.text)
        raise RuleError(self.rule, self.text, token.position, f"{message}, found {found}")

    # grammar
    def parse(self) -> Rule:
        if self.peek.kind == "end":
            self.fail("expected a condition")
        tree = self.or_()
        if self.peek.kind != "end":
            self.fail("expected 'and', 'or' or the end of the rule")
        return Rule(
            self.rule,
            self.text,
            tree,
            self.segments,
            self.paths,
            self.uses_events,
            tags=self.tags,
            counts=self.counts,
        )

    def or_(self) -> Any:
        parts = [self.and_()]
        while self.accept("keyword", "or"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else Any_(tuple(parts))

    def and_(self) -> Any:
        parts = [self.unary()]
        while self.accept("keyword", "and"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def unary(self) -> Any:
        if self.accept("keyword", "not"):
            return Not(self.unary())
        return self.primary()

    def primary(self) -> Any:
        if self.accept("punct", "("):
            inner = self.or_()
            self.expect("punct", ")", "')'")
            return inner
        if self.accept("keyword", "tag"):
            tag = self.string("a tag name in quotes")
            self.tags.add(tag)
            return HasTag(tag)
        if self.accept("keyword", "segment"):
            name = self.string("a segment name in quotes")
            self.segments.add(name)
            return InSegment(name)
        value = self.value()
        return self.predicate(value)

    def predicate(self, value: Any) -> Any:
        token = self.peek
        if token.kind == "op":
            self.take()
            op = "=" if token.text == "==" else token.text
            return Compare(value, op, self.value())
        negate = False
        if token.kind == "keyword" and token.text == "not" and self.tokens[self.index + 1].text in (
            "in", "contains",
        ):  # fmt: skip
            self.take()
            negate = True
        if self.accept("keyword", "in"):
            return Member(value, self.list_(), negate)
        if self.accept("keyword", "contains"):
            return Contains(value, self.value(), negate)
        if self.accept("keyword", "exists"):
            return Exists(value)
        if self.accept("keyword", "within"):
            return Within(value, self.duration(), older=False)
        if self.accept("keyword", "older"):
            self.expect("keyword", "than", "'than' after 'older'")
            return Within(value, self.duration(), older=True)
        return Truthy(value)

    def value(self) -> Any:
        token = self.peek
        if token.kind == "number":
            self.take()
            return Literal(float(token.text) if "." in token.text else int(token.text))
        if token.kind == "string":
            return Literal(self.string("a string"))
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            self.take()
            return Literal({"true": True, "false": False, "null": None}[token.text])
        if token.kind == "keyword" and token.text == "count":
            return self.count()
        if token.kind == "name":
            self.take()
            self.paths.add(token.text)
            return Path(token.text)
        self.fail("expected a value (an attribute, a number, a string or count(...))")
        raise AssertionError  # pragma: no cover

    def count(self) -> Count:
        self.take()
        self.uses_events = True
        self.expect("punct", "(", "'(' after count")
        event = self.expect("name", None, "an event type").text
        where: list[tuple[str, str, Any]] = []
        if self.accept("keyword", "where"):
            while True:
                prop = self.expect("name", None, "an event property").text
                op = self.expect("op", None, "a comparison").text
                literal = self.value()
                if not isinstance(literal, Literal):
                    self.fail("expected a number or a string")
                where.append((prop, "=" if op == "==" else op, literal.value))
                if not self.accept("keyword", "and"):
                    break
        window = self.duration() if self.accept("keyword", "within") else None
        self.expect("punct", ")", "')' to close count(")
        counted = Count(event, tuple(where), window)
        self.counts.append(counted)
        return counted

    def list_(self) -> tuple[Any, ...]:
        self.expect("punct", "[", "'[' to start a list")
        items = []
        while True:
            literal = self.value()
            if not isinstance(literal, Literal):
                self.fail("expected a number or a string in the list")
            items.append(literal.value)
            if not self.accept("punct", ","):
                break
        self.expect("punct", "]", "']' to close the list")
        return tuple(items)

    def string(self, what: str) -> str:
        token = self.expect("string", None, what)
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])

    def duration(self) -> timedelta:
        token = self.expect("duration", None, "a duration like 30d, 24h or 1y")
        return parse_duration(token.text)


def parse(rule: str, text: str) -> Rule:
    """Parse a rule; raises RuleError with the column of the first fault."""
    return _Parser(rule, text).parse()


def evaluation_order(rules: dict[str, Rule]) -> list[str]:
    """Segment names ordered so that each comes after the segments it refers to.

    Raises RuleError for a reference to an unknown segment or a cycle of references.
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " → ".join([*trail[trail.index(name) :], name])
            rule = rules[name]
            raise RuleError(name, rule.text, 0, f"segments refer to each other: {cycle}")
        state[name] = "visiting"
        for ref in sorted(rules[name].segments):
            if ref not in rules:
                rule = rules[name]
                at = rule.text.find(ref)
                raise RuleError(name, rule.text, max(at, 0), f"unknown segment {ref!r}")
            visit(ref, [*trail, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(rules):
        visit(name, [])
    return order


__all__ = ["Rule", "RuleError", "evaluation_order", "parse", "parse_duration", "tokenize"]
