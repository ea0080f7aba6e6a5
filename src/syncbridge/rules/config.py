"""The shape of rule files (`mappings/rules.toml`): traits, behaviour tags, segments, content.

Rule texts are parsed when the file is validated, so a bad rule fails `syncbridge validate`
with its name and the column of the fault.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .language import Rule, RuleError, evaluation_order, parse, parse_duration

TIME = "@time"
"""As a trait's `property`: the event's own time."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Aggregate = Literal[
    "count", "count_distinct", "sum", "min", "max", "avg", "last", "most_frequent", "days_since"
]


class TraitConfig(_Frozen):
    """An aggregation over a profile's events: `sum` of purchase `amount` within 365d, …"""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    aggregate: Aggregate
    event: str | list[str]
    field: str | None = Field(default=None, alias="property")
    """The event property to aggregate (`@time`: the event's time); `property` in the file."""
    within: str | None = None
    where: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_property(self) -> TraitConfig:
        needs_field = ("sum", "avg", "most_frequent", "last", "count_distinct")
        if self.aggregate in needs_field and not self.field:
            raise ValueError(f"a {self.aggregate} trait needs 'property'")
        if self.within is not None:
            parse_duration(self.within)
        return self

    @property
    def events(self) -> list[str]:
        return [self.event] if isinstance(self.event, str) else list(self.event)

    @property
    def window(self) -> timedelta | None:
        return parse_duration(self.within) if self.within else None


class ScoreConfig(_Frozen):
    """A 1-5 score from a trait and four thresholds (recency/frequency/monetary)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    trait: str
    thresholds: list[float] = Field(min_length=4, max_length=4)
    lower_is_better: bool = False

    @field_validator("thresholds")
    @classmethod
    def _ascending(cls, values: list[float]) -> list[float]:
        if values != sorted(values):
            raise ValueError("thresholds must be in ascending order")
        return values


class TagConfig(_Frozen):
    """A behaviour tag: the person did `event` (with property filters) within a window;
    `{property}` in the name makes one tag per value (`Browsed:{category}`); `absent` makes it
    "did A and no B within `delay` after it" (cart abandonment)."""

    name: str = Field(min_length=1, max_length=100)
    event: str
    where: dict[str, Any] = Field(default_factory=dict)
    within: str | None = None
    absent: str | None = None
    delay: str | None = None

    @model_validator(mode="after")
    def _durations(self) -> TagConfig:
        for value in (self.within, self.delay):
            if value is not None:
                parse_duration(value)
        if (self.absent is None) != (self.delay is None):
            raise ValueError("'absent' and 'delay' go together (no B within delay after A)")
        return self

    @property
    def parameter(self) -> str | None:
        match = re.search(r"\{(\w+)\}", self.name)
        return match.group(1) if match else None


class SegmentConfig(_Frozen):
    name: str = Field(min_length=1, max_length=100)
    rule: str
    description: str = ""


class ContentRule(_Frozen):
    model_config = ConfigDict(frozen=True, extra="allow")

    when: str


class ContentConfig(_Frozen):
    """An ordered list of rules for a group of merge fields; the first match wins."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    fields: list[str] = Field(min_length=1)
    rules: list[ContentRule] = Field(default_factory=list)
    default: dict[str, str] = Field(default_factory=dict)


class RulesConfig(_Frozen):
    traits: list[TraitConfig] = Field(default_factory=list)
    scores: list[ScoreConfig] = Field(default_factory=list)
    tags: list[TagConfig] = Field(default_factory=list)
    segments: list[SegmentConfig] = Field(default_factory=list)
    content: list[ContentConfig] = Field(default_factory=list)

    def compiled_segments(self) -> dict[str, Rule]:
        return {s.name: parse(s.name, s.rule) for s in self.segments}

    @model_validator(mode="after")
    def _rules_parse(self) -> RulesConfig:
        names = [t.name for t in self.traits] + [s.name for s in self.scores]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"trait and score names must be unique: {', '.join(duplicates)}")
        known = set(names)
        for score in self.scores:
            if score.trait not in known:
                raise ValueError(f"score {score.name!r} uses unknown trait {score.trait!r}")
        try:
            # A reference to an unknown segment is reported by `syncbridge validate` with its
            # key path (syncbridge.references); here only the order and cycles are checked.
            segments = self.compiled_segments()
            evaluation_order(
                {n: replace(r, segments=r.segments & segments.keys()) for n, r in segments.items()}
            )
            for group in self.content:
                for i, rule in enumerate(group.rules):
                    parse(f"{group.name}.rules[{i}]", rule.when)
                    values = rule.model_extra or {}
                    unknown = sorted(set(values) - set(group.fields))
                    if unknown:
                        raise ValueError(
                            f"content {group.name!r} rules[{i}] sets unknown fields: "
                            + ", ".join(unknown)
                        )
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        return self
