"""Computes one profile's traits, scores, behaviour tags, segments and content: pure functions
of its attributes, its events and the time. Each result names the rule that produced it, and
the earliest moment any of them can change with no new data (the profile's next expiry)."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..cleaning import format_datetime
from ..filters import all_match, compile_filters
from .config import TIME, RulesConfig, TagConfig, TraitConfig, parse_duration
from .evaluate import EventLookup, Facts, as_time, evaluate, matching_events
from .language import Rule, evaluation_order, parse

EventRow = tuple[str, datetime, Mapping[str, Any]]
"""(type, time, properties) of one behaviour event."""
DAY = timedelta(days=1)


@dataclass
class Evaluation:
    traits: dict[str, Any] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    content: dict[str, str] = field(default_factory=dict)
    explain: dict[str, str] = field(default_factory=dict)
    """For each content value, the rule that chose it (the rest is explained by the rules
    file itself: see `explain`)."""
    next_expiry: datetime | None = None


class CompiledRules:
    """A rules file made ready: segment rules parsed and ordered, content rules parsed."""

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        segments = config.compiled_segments()
        self.segments: list[Rule] = [segments[name] for name in evaluation_order(segments)]
        self.names = set(segments)
        self.descriptions = {s.name: s.rule for s in config.segments}
        self.content = [
            (
                group,
                [(parse(f"{group.name}.rules[{i}]", r.when), r) for i, r in enumerate(group.rules)],
            )
            for group in config.content
        ]

    def evaluate(
        self, attributes: Mapping[str, Any], events: Iterable[EventRow], now: datetime
    ) -> Evaluation:
        events = list(events)
        result = Evaluation()
        expiries: list[datetime] = []
        for trait in self.config.traits:
            value, expiry = compute_trait(trait, events, now)
            if value is not None:
                result.traits[trait.name] = value
            if expiry is not None:
                expiries.append(expiry)
        for score in self.config.scores:
            base = result.traits.get(score.trait)
            if isinstance(base, int | float):
                bucket = bisect_right(score.thresholds, base)
                result.traits[score.name] = 5 - bucket if score.lower_is_better else bucket + 1
        for tag in self.config.tags:
            names, expiry = compute_tag(tag, events, now)
            result.tags.update(names)
            if expiry is not None:
                expiries.append(expiry)
        self.decide(result, attributes, matching_events(events, now), now)
        if result.next_expiry is not None:
            expiries.append(result.next_expiry)
        result.next_expiry = min(expiries) if expiries else None
        return result

    def decide(
        self,
        result: Evaluation,
        attributes: Mapping[str, Any],
        events: EventLookup,
        now: datetime,
        only: set[str] | None = None,
        kept: set[str] | None = None,
    ) -> None:
        """Segments and content from the traits and tags already in `result`.

        With `only`, just those segments are evaluated and `kept` (the stored memberships of
        the others) stands for the rest: a re-evaluation of changed rules from stored results.
        Sets `result.next_expiry` from the time windows these rules looked at.
        """
        values = {**attributes, **result.traits}
        attribute_tags = {str(t).strip() for t in _as_list(attributes.get("shop_tags"))}
        facts = Facts(now=now, values=values, tags=result.tags | attribute_tags, events=events)
        if kept:
            facts.segments.update(kept)
            result.segments.update(kept)
        for rule in self.segments:
            if only is not None and rule.name not in only:
                continue
            if evaluate(rule, facts):
                result.segments.add(rule.name)
                facts.segments.add(rule.name)
        for group, rules in self.content:
            chosen: Mapping[str, Any] = group.default
            source = "default"
            for parsed, content_rule in rules:
                if evaluate(parsed, facts):
                    chosen, source = content_rule.model_extra or {}, parsed.text
                    break
            for name in group.fields:
                if chosen.get(name) is not None:
                    result.content[name] = str(chosen[name])
                    result.explain[f"content:{name}"] = f"{group.name}: {source}"
        result.next_expiry = min(facts.expiries) if facts.expiries else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set):
        return list(value)
    return [v for v in str(value).split(",") if v.strip()]


def _selected(
    events: list[EventRow], types: list[str], where: Mapping[str, Any], window: timedelta | None,
    now: datetime,
) -> list[EventRow]:  # fmt: skip
    filters = compile_filters(where)
    return [
        e for e in events
        if e[0] in types and e[1] <= now and (window is None or e[1] >= now - window)
        and all_match(filters, e[2].get)
    ]  # fmt: skip


def compute_trait(
    trait: TraitConfig, events: list[EventRow], now: datetime
) -> tuple[Any, datetime | None]:
    """The trait's value (None when there is nothing to aggregate) and when it next expires."""
    window = trait.window
    chosen = _selected(events, trait.events, trait.where, window, now)
    expiry = min(e[1] for e in chosen) + window if window and chosen else None
    if trait.aggregate == "count":
        return len(chosen), expiry
    if trait.aggregate in ("count_distinct", "sum") and not chosen:
        return 0, expiry  # nothing bought: a lifetime value of 0, not an unknown one
    if not chosen:
        return None, expiry
    if trait.aggregate == "days_since":
        latest = max(e[1] for e in chosen)
        days = int((now - latest) / DAY)
        return days, latest + (days + 1) * DAY
    prop = trait.field or TIME
    values = [e[1] if prop == TIME else e[2].get(prop) for e in chosen]
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return None, expiry
    if trait.aggregate == "count_distinct":
        return len({str(v) for v in values}), expiry
    if trait.aggregate == "last":
        newest = max(chosen, key=lambda e: e[1])
        value = newest[1] if prop == TIME else newest[2].get(prop)
        return _plain(value), expiry
    if trait.aggregate == "most_frequent":
        counts = Counter(str(v) for v in values)
        top = max(counts.values())
        return min(v for v, n in counts.items() if n == top), expiry
    if trait.aggregate in ("min", "max"):
        times = [as_time(v) if not isinstance(v, datetime) else v for v in values]
        if all(t is not None for t in times):
            pick = min(times) if trait.aggregate == "min" else max(times)  # type: ignore[type-var]
            return format_datetime(pick), expiry  # type: ignore[arg-type]
        numbers = _numbers(values)
        if not numbers:
            return None, expiry
        return (min(numbers) if trait.aggregate == "min" else max(numbers)), expiry
    numbers = _numbers(values)
    if not numbers:
        return None, expiry
    total = sum(numbers)
    if trait.aggregate == "sum":
        return round(total, 2), expiry
    return round(total / len(numbers), 2), expiry  # avg


def _numbers(values: list[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def _plain(value: Any) -> Any:
    return format_datetime(value) if isinstance(value, datetime) else value


def compute_tag(
    tag: TagConfig, events: list[EventRow], now: datetime
) -> tuple[set[str], datetime | None]:
    """The tag names this behaviour rule gives, and when that can next change."""
    window = parse_duration(tag.within) if tag.within else None
    chosen = _selected(events, [tag.event], tag.where, window, now)
    if not chosen:
        return set(), None
    if tag.absent is not None:
        assert tag.delay is not None
        delay = parse_duration(tag.delay)
        latest = max(e[1] for e in chosen)
        followed = any(e[0] == tag.absent and e[1] >= latest for e in events)
        if followed:
            return set(), None
        if now < latest + delay:
            return set(), latest + delay  # becomes abandoned then, unless B happens
        expiry = latest + window if window else None
        return {tag.name}, expiry
    expiry = max(e[1] for e in chosen) + window if window else None
    parameter = tag.parameter
    if parameter is None:
        return {tag.name}, expiry
    names = {
        tag.name.replace("{" + parameter + "}", str(e[2].get(parameter)).strip())
        for e in chosen
        if e[2].get(parameter) not in (None, "")
    }
    if window is not None:  # each value leaves with its own latest event; take the earliest
        latest_per_value: dict[str, datetime] = {}
        for e in chosen:
            value = str(e[2].get(parameter) or "").strip()
            if value:
                latest_per_value[value] = max(latest_per_value.get(value, e[1]), e[1])
        expiry = min(latest_per_value.values()) + window if latest_per_value else None
    return names, expiry


def explain(config: RulesConfig, results: Mapping[str, Any]) -> dict[str, str]:
    """Why a profile has each of its stored results: the rule behind every one."""
    out: dict[str, str] = {}
    for trait in config.traits:
        where = f" where {trait.where}" if trait.where else ""
        window = f" within {trait.within}" if trait.within else ""
        of = f" of {trait.field}" if trait.field else ""
        out[trait.name] = f"{trait.aggregate}{of} over {'/'.join(trait.events)}{where}{window}"
    for score in config.scores:
        out[score.name] = f"score of {score.trait} by thresholds {score.thresholds}"
    for tag in results.get("tags") or []:
        for rule in config.tags:
            template = rule.name.split("{")[0]
            if tag == rule.name or (rule.parameter and tag.startswith(template)):
                absent = f", no {rule.absent} within {rule.delay} after" if rule.absent else ""
                window = f" within {rule.within}" if rule.within else ""
                out[f"tag:{tag}"] = f"{rule.event}{window}{absent}"
                break
    for segment in config.segments:
        out[f"segment:{segment.name}"] = segment.rule
    out.update(results.get("explain") or {})
    return out
