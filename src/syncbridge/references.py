"""Checks every name a setup refers to against the names it defines.

A rule over an attribute no mapping produces, a trait over an event type no mapping emits, a
merge field from a misspelled attribute: each is valid on its own and silently yields nothing at
run time — an empty segment, a blank merge field, and with an audience `segment` and
`removal = "archive"`, a whole audience archived by one typo. `check_references` reports each
with the file, the key path and a "did you mean". What a setup defines (the `Catalog`):

- attributes: every mapping's `[attributes]`, plus `email`/`email_valid` (from
  `identifiers.email`) and `phone` (from `identifiers.phone`), as identity resolution keeps them;
- event types and their properties: each `[[events]]` table's `type`, or its `type_map` values;
  a `type_field` without `only_mapped` passes any type through, so then event types are not
  checked (their properties still are, as far as they can be known);
- traits and scores, segments, content fields and behaviour tags from the rules file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config.mapping import Mapping
from .config.models import AudienceConfig, Config
from .errors import Problem
from .rules.config import TIME, RulesConfig
from .rules.language import Rule, parse

PLACEHOLDER_LIST_ID = "replace-with-your-audience-id"
"""The list id `syncbridge init` writes (config.example.toml) until the user puts theirs."""
_DATA_CENTRE = re.compile(r"-([a-z]+[0-9]+)$")
_RULE_TAG_SOURCE = "shop_tags"
"""The attribute whose values the rules see as tags too (see rules/compute.py)."""


def data_centre(api_key: str) -> str | None:
    """The data centre of a Mailchimp API key (`…-us21` → `us21`), or None without one."""
    match = _DATA_CENTRE.search(api_key.strip())
    return match.group(1) if match else None


@dataclass
class Catalog:
    """The names a setup defines: what its mappings produce and its rules declare."""

    attributes: set[str] = field(default_factory=set)
    events: dict[str, set[str]] = field(default_factory=dict)
    """Each known event type and the properties its mappings give it."""
    open_properties: set[str] | None = None
    """Properties of events whose type comes from the data; None when there are none (then
    every event type is known)."""
    traits: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    content: set[str] = field(default_factory=set)
    rule_tags: list[str] = field(default_factory=list)

    @property
    def rule_values(self) -> set[str]:
        """What a rule can read: attributes, traits and scores."""
        return self.attributes | self.traits

    @property
    def profile_values(self) -> set[str]:
        """What an audience can read: attributes, traits, scores and content fields."""
        return self.attributes | self.traits | self.content

    def properties_of(self, types: Iterable[str]) -> set[str] | None:
        """The properties events of these types can have; None when no type is known."""
        known = [t for t in types if t in self.events]
        if not known and self.open_properties is None:
            return None
        props: set[str] = set(self.open_properties or ())
        for name in known:
            props |= self.events[name]
        return props

    def knows_tag(self, tag: str) -> bool:
        if _RULE_TAG_SOURCE in self.attributes:
            return True  # tags from the data: any name may come
        wanted = tag.casefold()
        for name in self.rule_tags:
            pattern = re.escape(name.casefold())
            pattern = re.sub(r"\\\{\w+\\\}", ".+", pattern)
            if re.fullmatch(pattern, wanted):
                return True
        return False


def catalog(mappings: Iterable[Mapping], rules: RulesConfig | None) -> Catalog:
    """Everything the mappings produce and the rules declare."""
    cat = Catalog()
    for mapping in mappings:
        cat.attributes.update(mapping.attributes)
        if mapping.identifiers.email is not None:
            cat.attributes.update(("email", "email_valid"))
        if mapping.identifiers.phone is not None:
            cat.attributes.add("phone")
        for event in mapping.events:
            props = set(event.properties)
            types = [event.type] if event.type else list(event.type_map.values())
            for name in types:
                cat.events.setdefault(name, set()).update(props)
            if event.type_field and not event.only_mapped:
                cat.open_properties = (cat.open_properties or set()) | props
    if rules is not None:
        cat.traits.update(t.name for t in rules.traits)
        cat.traits.update(s.name for s in rules.scores)
        cat.segments.update(s.name for s in rules.segments)
        cat.content.update(f for group in rules.content for f in group.fields)
        cat.rule_tags.extend(t.name for t in rules.tags)
    return cat


def did_you_mean(name: str, candidates: Iterable[str], listed: int = 12) -> str:
    """ "; did you mean 'x'?" for a near miss (case aside), else the names there are."""
    by_fold = {c.casefold(): c for c in sorted(candidates)}
    close = difflib.get_close_matches(name.casefold(), list(by_fold), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {by_fold[close[0]]!r}?"
    names = list(by_fold.values())
    if not names:
        return ""
    more = f", … {len(names) - listed} more" if len(names) > listed else ""
    return f" (known: {', '.join(repr(n) for n in names[:listed])}{more})"


@dataclass
class _Report:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def check_config(config: Config, file: str) -> list[Problem]:
    """Problems that need no mapping or rule: the API key, placeholder ids, source names."""
    problems: list[Problem] = []
    mailchimp = config.mailchimp
    key = mailchimp.api_key
    if key is not None and not mailchimp.api_base_url and not data_centre(key.get_secret_value()):
        problems.append(
            Problem(
                file,
                "mailchimp.api_key",
                "the key (***) has no data-centre suffix like '-us21', so there is no "
                "Mailchimp server to call; copy the whole key from Mailchimp (Profile → "
                "Extras → API keys), or set mailchimp.api_base_url",
            )
        )
    for k, audience in enumerate(mailchimp.audiences):
        # Without a key nothing is pushed: `init` then `run --once` fills the cache as it is.
        if key is not None and audience.list_id.strip() == PLACEHOLDER_LIST_ID:
            problems.append(
                Problem(
                    file,
                    f"mailchimp.audiences[{k}].list_id",
                    f"still the placeholder {PLACEHOLDER_LIST_ID!r} written by `syncbridge "
                    "init`: put the audience id from Mailchimp (Audience → Settings → Audience "
                    "name and defaults → Audience ID), e.g. in $MAILCHIMP_LIST_ID",
                )
            )
    sources = [s.name for s in config.sources]
    for attribute, order in config.identity.attribute_priority.items():
        for j, name in enumerate(order):
            if name not in sources:
                where = f"identity.attribute_priority.{attribute}[{j}]"
                msg = f"unknown source {name!r}{did_you_mean(name, sources)}"
                problems.append(Problem(file, where, msg))
    return problems


def check_references(
    config: Config, file: str, cat: Catalog, rules: RulesConfig | None, rules_file: str
) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for every name that the setup does not define."""
    report = _Report()
    for attribute in config.identity.attribute_priority:
        if attribute not in cat.attributes:
            hint = did_you_mean(attribute, cat.attributes)
            msg = f"unknown attribute {attribute!r}: no mapping produces it{hint}"
            report.errors.append(Problem(file, f"identity.attribute_priority.{attribute}", msg))
    for k, audience in enumerate(config.mailchimp.audiences):
        _check_audience(audience, f"mailchimp.audiences[{k}]", file, cat, report)
    if rules is not None:
        _check_rules(rules, rules_file, cat, report)
    return report.errors, report.warnings


_UNRECORDED = {
    "consent_attribute": "no one will be added as subscribed",
    "opt_out_attribute": "no source's opt-out will reach Mailchimp",
}


def _check_audience(
    audience: AudienceConfig, prefix: str, file: str, cat: Catalog, report: _Report
) -> None:
    values = cat.profile_values
    for key, consequence in _UNRECORDED.items():
        name = getattr(audience, key)
        if not name or name in values:
            continue
        if key in audience.model_fields_set:
            msg = f"unknown attribute {name!r}: no mapping produces it{did_you_mean(name, values)}"
            report.errors.append(Problem(file, f"{prefix}.{key}", msg))
        else:
            msg = (
                f"no mapping produces {name!r}: {consequence} (set {key} to the attribute that "
                'records it, or to "" to say there is none)'
            )
            report.warnings.append(Problem(file, f"{prefix}.{key}", msg))
    for j, name in enumerate(audience.tag_attributes):
        if name not in values:
            msg = f"unknown attribute {name!r}: no mapping produces it{did_you_mean(name, values)}"
            report.errors.append(Problem(file, f"{prefix}.tag_attributes[{j}]", msg))
    for j, merge_field in enumerate(audience.merge_fields):
        name = merge_field.source
        if name is not None and name not in values:
            msg = f"unknown attribute, trait or content field {name!r}{did_you_mean(name, values)}"
            report.errors.append(Problem(file, f"{prefix}.merge_fields[{j}].source", msg))


def _check_rules(rules: RulesConfig, file: str, cat: Catalog, report: _Report) -> None:
    for i, trait in enumerate(rules.traits):
        key = f"traits[{i}]"
        single = isinstance(trait.event, str)
        for j, event in enumerate(trait.events):
            _check_event(
                event, f"{key}.event" if single else f"{key}.event[{j}]", file, cat, report
            )
        props = cat.properties_of(trait.events)
        if trait.field is not None and trait.field != TIME:
            _check_property(trait.field, trait.events, props, f"{key}.property", file, report)
        for name in trait.where:
            _check_property(name, trait.events, props, f"{key}.where.{name}", file, report)
    for i, tag in enumerate(rules.tags):
        key = f"tags[{i}]"
        _check_event(tag.event, f"{key}.event", file, cat, report)
        if tag.absent is not None:
            _check_event(tag.absent, f"{key}.absent", file, cat, report)
        props = cat.properties_of([tag.event])
        for name in tag.where:
            _check_property(name, [tag.event], props, f"{key}.where.{name}", file, report)
        if tag.parameter is not None:
            _check_property(tag.parameter, [tag.event], props, f"{key}.name", file, report)
    for i, segment in enumerate(rules.segments):
        rule = parse(segment.name, segment.rule)
        _check_rule(rule, f"segment {segment.name!r}", f"segments[{i}].rule", file, cat, report)
    for i, group in enumerate(rules.content):
        for j, content_rule in enumerate(group.rules):
            rule = parse(f"{group.name}.rules[{j}]", content_rule.when)
            where = f"content[{i}].rules[{j}].when"
            _check_rule(rule, f"content {group.name!r}", where, file, cat, report)


def _check_rule(rule: Rule, label: str, key: str, file: str, cat: Catalog, report: _Report) -> None:
    values = cat.rule_values
    for path in sorted(rule.paths):
        if path not in values and path.split(".", 1)[0] not in values:
            msg = f"{label}: unknown attribute or trait {path!r}{did_you_mean(path, values)}"
            report.errors.append(Problem(file, key, msg))
    for name in sorted(rule.segments):
        if name not in cat.segments:
            msg = f"{label}: unknown segment {name!r}{did_you_mean(name, cat.segments)}"
            report.errors.append(Problem(file, key, msg))
    for name in sorted(rule.tags):
        if not cat.knows_tag(name):
            msg = (
                f"{label}: unknown tag {name!r}: no behaviour tag gives it and no mapping "
                f"produces {_RULE_TAG_SOURCE}{did_you_mean(name, cat.rule_tags)}"
            )
            report.errors.append(Problem(file, key, msg))
    for count in rule.counts:
        if _check_event(count.event, key, file, cat, report, label):
            props = cat.properties_of([count.event])
            for name, _, _ in count.where:
                _check_property(name, [count.event], props, key, file, report, label)


def _check_event(
    name: str, key: str, file: str, cat: Catalog, report: _Report, label: str = ""
) -> bool:
    """False (and an error) when no mapping emits events of this type."""
    if cat.open_properties is not None or name in cat.events:
        return True
    lead = f"{label}: " if label else ""
    msg = f"{lead}unknown event type {name!r}: no mapping emits it{did_you_mean(name, cat.events)}"
    report.errors.append(Problem(file, key, msg))
    return False


def _check_property(
    name: str,
    types: list[str],
    props: set[str] | None,
    key: str,
    file: str,
    report: _Report,
    label: str = "",
) -> None:
    if props is None or name in props:
        return
    lead = f"{label}: " if label else ""
    of = "/".join(types)
    msg = f"{lead}unknown property {name!r} of event {of!r}{did_you_mean(name, props)}"
    report.errors.append(Problem(file, key, msg))


__all__ = [
    "PLACEHOLDER_LIST_ID",
    "Catalog",
    "catalog",
    "check_config",
    "check_references",
    "data_centre",
    "did_you_mean",
]
