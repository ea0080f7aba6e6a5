"""What a profile should look like in one audience: pure functions, no I/O.

Merge-field values are formatted for their Mailchimp type (dates as YYYY-MM-DD, birthdays as
MM/DD, numbers as numbers, dropdown values only from the declared choices); a value that does
not fit is left out rather than sent to be refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from liquid import Environment

from ..cleaning import clean_boolean
from ..config.models import AudienceConfig, MergeFieldConfig
from ..hashing import content_hash

_liquid = Environment()
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: md5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class DesiredMember:
    profile_id: int
    email: str
    consent: bool | None
    """True: recorded consent; False: an explicit opt-out at a source; None: neither.

    A consent attribute that is false (Shopify's "Accepts Email Marketing = no", the default for
    anyone who never ticked the box) is *not* an opt-out: it is None, so an existing member
    keeps their status and only a new member is held back (`without_consent`)."""
    merge_fields: dict[str, Any]
    tags: frozenset[str]

    @cached_property
    def hash(self) -> str:
        return subscriber_hash(self.email)

    @cached_property
    def merge_hash(self) -> str:
        return content_hash(self.merge_fields)

    @cached_property
    def state_hash(self) -> str:
        """Everything we would send: a per-member error is not retried until this changes."""
        return content_hash([self.email, self.consent, self.merge_fields, sorted(self.tags)])


class AudienceRules:
    """An audience's config compiled once: templates parsed, fields ordered."""

    def __init__(self, audience: AudienceConfig, declared_tags: Iterable[str] = ()) -> None:
        """`declared_tags`: the tag names the rules declare (segments, behaviour tags). Mailchimp
        ignores case in tag names, so a data tag that differs from one only in case (`vip`
        from shop tags beside the `VIP` segment) is the same tag there: it is sent with the
        declared spelling, whatever order members arrive in, and noted in `respelled`."""
        self.audience = audience
        prefix = audience.tag_prefix if audience.rule_tags else ""
        self.spelling = {f"{prefix}{t}"[:100].casefold(): f"{prefix}{t}"[:100]
                         for t in declared_tags}  # fmt: skip
        self.respelled: dict[str, str] = {}
        """Data tags sent with a declared spelling: {as found: as sent}."""
        self.templates = {
            f.tag: _liquid.from_string(f.template) for f in audience.merge_fields if f.template
        }

    def desire(
        self, profile_id: int, attributes: dict[str, Any], rule_tags: frozenset[str] = frozenset()
    ) -> DesiredMember | None:
        """The member this profile should be, or None when it is out of the audience's scope.

        `rule_tags` are the behaviour tags and segments the rules gave the profile."""
        email = attributes.get("email")
        if not email or not attributes.get("email_valid"):
            return None
        consent = self._consent(attributes)
        merge_fields = {}
        for field in self.audience.merge_fields:
            value = self._merge_value(field, attributes)
            if value is not None:
                merge_fields[field.tag] = value
        tags = self._tags(attributes)
        if tags and self.spelling:
            tags = self._spelled(tags)
        if rule_tags and self.audience.rule_tags:
            tags |= {f"{self.audience.tag_prefix}{t}"[:100] for t in rule_tags}
        return DesiredMember(profile_id, email, consent, merge_fields, tags)

    def _spelled(self, tags: frozenset[str]) -> frozenset[str]:
        out = set()
        for tag in tags:
            declared = self.spelling.get(tag.casefold(), tag)
            if declared != tag:
                self.respelled[tag] = declared
            out.add(declared)
        return frozenset(out)

    def _consent(self, attributes: dict[str, Any]) -> bool | None:
        """Only an explicit opt-out is False; only a recorded yes is True; all else is None."""
        opt_out = attributes.get(self.audience.opt_out_attribute or "")
        consent = attributes.get(self.audience.consent_attribute or "")
        if opt_out is None or opt_out is False:  # the common cases, without parsing
            if consent is True:
                return True
            if consent is None or consent is False:
                return None
        if _is_yes(opt_out):
            return False
        if _is_yes(attributes.get(self.audience.consent_attribute or "")):
            return True
        return None

    def _merge_value(self, field: MergeFieldConfig, attributes: dict[str, Any]) -> Any:
        if field.template is not None:
            raw: Any = self.templates[field.tag].render(**attributes).strip() or None
        else:
            raw = attributes.get(field.source or "")
        return format_merge_value(field, raw)

    def _tags(self, attributes: dict[str, Any]) -> frozenset[str]:
        tags: set[str] = set()
        prefix = self.audience.tag_prefix + self.audience.attribute_tag_prefix
        for name in self.audience.tag_attributes:
            value = attributes.get(name)
            if not value:
                continue
            for item in value if isinstance(value, list) else str(value).split(","):
                text = str(item).strip()
                if text:
                    tags.add((prefix + text)[:100])
        return frozenset(tags)


def _is_yes(value: Any) -> bool:
    """True for a boolean attribute that is true, or a text one that says yes ("yes", "1")."""
    if value is None or value == "":
        return False
    try:
        return clean_boolean(value)
    except ValueError:
        return False


def format_merge_value(field: MergeFieldConfig, value: Any) -> Any:
    """A value in the form Mailchimp accepts for the field's type, or None."""
    if value is None or value == "":
        return None
    kind = field.type
    if kind == "number":
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return value
        try:
            return float(str(value))
        except ValueError:
            return None
    if kind in ("date", "birthday"):
        match = _DATE.match(str(value))
        if match is None:
            return None
        year, month, day = match.groups()
        return f"{year}-{month}-{day}" if kind == "date" else f"{month}/{day}"
    if kind in ("dropdown", "radio"):
        text = str(value)
        return text if text in field.choices else None
    if kind == "address":
        return value if isinstance(value, dict) else None
    return str(value)
