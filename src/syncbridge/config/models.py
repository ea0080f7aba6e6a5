"""The validated shape of `config.toml`: frozen pydantic models, parsed once at start."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .timing import check_crontab, check_interval


def refuse_unknown_keys(model: type[BaseModel], data: Any) -> Any:
    """A `mode="before"` check of a section's keys: a misspelt one is named, with the key it
    is closest to, instead of pydantic's plain "extra inputs are not permitted"."""
    if isinstance(data, dict):
        for key in data:
            if key not in model.model_fields:
                close = difflib.get_close_matches(str(key), list(model.model_fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown key {key!r}{hint}")
    return data


class Frozen(BaseModel):
    """Base for config sections: immutable, and unknown keys are errors (typos never pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreConfig(Frozen):
    url: str = "sqlite:///syncbridge.db"
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql")):
            raise ValueError("store.url must be a sqlite:/// or postgresql+psycopg:// URL")
        return url


class LoggingConfig(Frozen):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class IngestConfig(Frozen):
    parallel: bool = True
    """First reads: read and transform in producer processes while this one writes."""
    workers: int = Field(default=2, ge=1, le=32)
    """Producer processes at once (one stream each); about the number of cores is right."""


class IdentityConfig(Frozen):
    """How records of one person merge, and which source's value wins per attribute."""

    source_priority: list[str] = Field(default_factory=list)
    attribute_priority: dict[str, list[str]] = Field(default_factory=dict)
    default_phone_region: str | None = "US"
    match_on_phone: bool = False
    """Phones join records only when enabled: households and switchboards share numbers."""


MergeFieldType = Literal[
    "text", "number", "date", "birthday", "address", "phone", "url", "dropdown", "radio", "zip"
]


MERGE_TAG = re.compile(r"[A-Z][A-Z0-9_]{0,9}")
"""Mailchimp's merge tags: what `*|TAG|*` can name."""


def _tag_suggestion(tag: str) -> str:
    cleaned = re.sub(r"[^A-Z0-9_]", "", tag.upper().replace(" ", "_").replace("-", "_"))
    cleaned = cleaned.lstrip("0123456789_")[:10]
    return cleaned or "FNAME"


class MergeFieldConfig(Frozen):
    """A profile attribute (or a Liquid template over attributes) written to a merge field."""

    tag: str
    name: str = Field(min_length=1, max_length=100)
    type: MergeFieldType = "text"
    source: str | None = None
    template: str | None = None
    choices: list[str] = Field(default_factory=list)

    @field_validator("tag")
    @classmethod
    def _mailchimp_tag(cls, tag: str) -> str:
        if not MERGE_TAG.fullmatch(tag):
            raise ValueError(
                f"merge field tag {tag!r} is not one Mailchimp accepts: 1 to 10 characters, "
                "an upper-case letter first, then upper-case letters, digits or '_' "
                f"(e.g. {_tag_suggestion(tag)!r})"
            )
        return tag

    @model_validator(mode="after")
    def _one_source(self) -> MergeFieldConfig:
        if (self.source is None) == (self.template is None):
            raise ValueError("give exactly one of 'source' (an attribute) or 'template' (Liquid)")
        if self.type in ("dropdown", "radio") and not self.choices:
            raise ValueError(f"a {self.type} merge field needs 'choices'")
        return self


class SavedSegmentConfig(Frozen):
    """A Mailchimp saved segment kept as declared (Mailchimp's own condition objects)."""

    name: str = Field(min_length=1, max_length=100)
    match: Literal["any", "all"] = "all"
    conditions: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("conditions")
    @classmethod
    def _condition_shape(cls, conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, condition in enumerate(conditions):
            missing = [k for k in ("condition_type", "op", "field") if k not in condition]
            if missing:
                raise ValueError(f"conditions[{i}] needs {', '.join(missing)}")
        return conditions


class AudienceConfig(Frozen):
    """Which profiles go to one Mailchimp audience, and what they carry there."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    list_id: str = Field(min_length=1)
    segment: str | None = None
    """Only members of this segment (from the rules) belong to the audience; default: everyone
    with a valid email, the consent rules deciding who is added."""
    consent_attribute: str | None = "accepts_email_marketing"
    """A profile attribute that is true when the person consented to marketing email."""
    opt_out_attribute: str | None = "email_opt_out"
    """A profile attribute that is true when a source recorded an explicit opt-out."""
    without_consent: Literal["skip", "transactional"] = "skip"
    """New members without recorded consent: left out, or added as transactional contacts."""
    merge_fields: list[MergeFieldConfig] = Field(default_factory=list)
    tag_attributes: list[str] = Field(default_factory=list)
    """Attributes whose values (a list, or comma-separated text) become tags."""
    tag_prefix: str = ""
    """Put before every tag this audience gets (from the data and from the rules)."""
    attribute_tag_prefix: str = ""
    """Put before the tags from `tag_attributes` only (after `tag_prefix`): `"shop:"` keeps
    a shop tag `vip` apart from the rules' `VIP` segment, which Mailchimp would take for one
    tag (it ignores case in tag names)."""
    rule_tags: bool = True
    """Behaviour tags and segment memberships from the rules become Mailchimp tags too."""
    removal: Literal["archive", "untag", "ignore"] = "archive"
    recreate_archived: bool = False
    segments: list[SavedSegmentConfig] = Field(default_factory=list)
    merge_field_limit: int = Field(default=30, ge=1, le=200)
    """Mailchimp's merge-field limit for this audience (30; 80 on Premium plans)."""
    max_removal_share: float = Field(default=0.2, ge=0.0, le=1.0)
    """A push that would archive or untag more than this share of the audience's members
    (or take one tag from them) stops unless run with --allow-mass-removal."""

    @field_validator("merge_fields")
    @classmethod
    def _unique_tags(cls, fields: list[MergeFieldConfig]) -> list[MergeFieldConfig]:
        tags = [f.tag for f in fields]
        duplicates = sorted({t for t in tags if tags.count(t) > 1})
        if duplicates:
            raise ValueError(f"merge field tags must be unique: {', '.join(duplicates)}")
        return fields


class MailchimpConfig(Frozen):
    api_key: SecretStr | None = None
    api_base_url: str | None = None
    """Overrides the API host (a proxy or a local emulator); else from the key's -dc suffix."""
    max_connections: int = Field(default=10, ge=1, le=10)
    timeout_s: float = Field(default=30.0, gt=0, le=120)
    retries: int = Field(default=5, ge=0, le=20)
    batch_threshold: int | None = Field(default=None, ge=1)
    """From this many new members on, upserts go through /batches (run by Mailchimp, one
    batch at a time) instead; None: never (direct calls on every connection are faster)."""
    batch_poll_s: float = Field(default=5.0, gt=0)
    tags_in_batch: bool = True
    """Send the tags a member gains inside its batch upsert (additions only, confirmed from
    the answer; see push/inline_tags.py) instead of by segment calls."""
    audiences: list[AudienceConfig] = Field(default_factory=list)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class StreamConfig(BaseModel):
    """One stream of a source; connector-specific keys are validated by the connector's model."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    mapping: str


class SourceConfig(BaseModel):
    """One `[[sources]]` table; keys other than these belong to the connector's options."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    connector: str
    enabled: bool = True
    streams: list[StreamConfig] = Field(min_length=1)
    schedule: str | None = None
    """How often the daemon pulls this source: `30s`, `5m`, `1h` (default `[daemon] schedule`)."""
    cron: str | None = None
    """Or when: a crontab line, `*/15 * * * *` (minute hour day month weekday, UTC)."""

    @model_validator(mode="before")
    @classmethod
    def _schedule_typos(cls, data: Any) -> Any:
        """A near miss of `schedule` or `cron` would pass as a connector option: name it."""
        if isinstance(data, dict):
            for key in data:
                close = difflib.get_close_matches(str(key), ["schedule", "cron"], n=1, cutoff=0.7)
                if close and close[0] != key:
                    raise ValueError(f"unknown key {key!r}; did you mean {close[0]!r}?")
        return data

    @field_validator("schedule")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None:
            check_interval(value)
        return value

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is not None:
            check_crontab(value)
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> SourceConfig:
        if self.schedule is not None and self.cron is not None:
            raise ValueError("give one of 'schedule' (an interval) or 'cron', not both")
        return self

    def options(self) -> dict[str, object]:
        """The connector-specific keys of this source."""
        return dict(self.model_extra or {})


class RulesSection(Frozen):
    file: str | None = None
    """A rules file (traits, behaviour tags, segments, content), e.g. mappings/rules.toml."""


# --- [daemon] failure alerts (issue 14, operations: alerts.py) -------------------------------
# The daemon's other [daemon] keys are DaemonConfig's own; it takes these by inheritance.


class DaemonAlertsConfig(Frozen):
    """`[daemon] alert_webhook` / `alert_after`: a JSON POST when a job fails that many times
    in a row, and one when it recovers (see `syncbridge.alerts`)."""

    alert_webhook: SecretStr | None = None
    """http(s) URL receiving the alerts; a secret (chat webhooks carry their token in it)."""
    alert_after: int = Field(default=3, ge=1, le=1000)
    """Consecutive failures of one job before it is reported as failing."""

    @field_validator("alert_webhook", mode="before")
    @classmethod
    def _empty_webhook_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("alert_webhook")
    @classmethod
    def _webhook_is_a_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:  # never echo it: a secret
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


# --- end of [daemon] failure alerts ------------------------------------------------------------


class DaemonConfig(DaemonAlertsConfig):
    """`syncbridge daemon`: schedules, the real-time lane, the HTTP server, shutdown, leases."""

    schedule: str = "5m"
    """How often a source without its own `schedule`/`cron` is pulled, and how often each
    destination reads Mailchimp's changes back even when nothing changed here."""
    flush_s: float = Field(default=2.0, gt=0, le=3600)
    """Changes wait at most this long for a destination's next micro-batch …"""
    flush_members: int = Field(default=500, ge=1, le=100_000)
    """… or until this many are waiting (500: one batch-subscribe call)."""
    http: str | None = "127.0.0.1:8642"
    """host:port of the health, metrics and admin server; "" turns it off."""
    admin_token: SecretStr | None = None
    """Bearer token of the admin endpoints; unset: they are off."""
    shutdown_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """SIGTERM/SIGINT: in-flight work gets this long to finish, then the daemon exits anyway."""
    lease_s: float = Field(default=15.0, ge=1, le=3600)
    """PostgreSQL, several agents: a dead agent's jobs are taken over within this long."""
    backoff_max_s: float = Field(default=300.0, ge=1)
    """A failing job is retried after 5 s, 10 s, 20 s, … at most this long apart."""
    ready_failing_s: float = Field(default=300.0, ge=0)
    """/readyz answers 503 once a consumer has been failing for longer than this."""
    reload_poll_s: float = Field(default=2.0, gt=0)
    """How often the config, mapping and rules files are checked for changes."""

    @model_validator(mode="before")
    @classmethod
    def _typos(cls, data: Any) -> Any:
        return refuse_unknown_keys(cls, data)

    @field_validator("schedule")
    @classmethod
    def _interval(cls, value: str) -> str:
        check_interval(value)
        return value

    @field_validator("http")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if not value:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port, e.g. '127.0.0.1:8642'")
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class IntakeConfig(Frozen):
    """The event intake on the daemon's HTTP server (`/v1/track`, `/v1/batch`, …, Segment's
    HTTP tracking API): the write keys it accepts and the source it stores events into."""

    write_keys: list[SecretStr] = Field(default_factory=list)
    """Keys a client may send (HTTP Basic user name, or `writeKey` in the body); none: off."""
    source: str | None = None
    """The `connector = "intake"` source to store into (default: the only one there is)."""
    max_batch_records: int = Field(default=5000, ge=1, le=100_000)
    """Requests waiting together are stored in one transaction of at most this many events."""

    @model_validator(mode="before")
    @classmethod
    def _typos(cls, data: Any) -> Any:
        return refuse_unknown_keys(cls, data)

    @field_validator("write_keys", mode="before")
    @classmethod
    def _one_key_is_a_list(cls, value: object) -> object:
        if isinstance(value, str):  # SYNCBRIDGE_INTAKE__WRITE_KEYS=key, or a JSON list
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [k.strip() for k in text.split(",") if k.strip()]
        return value

    @field_validator("write_keys")
    @classmethod
    def _no_empty_key(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(k.get_secret_value()) < 8 for k in value):
            raise ValueError("a write key must have at least 8 characters")
        return value


class Config(Frozen):
    """The whole configuration. `base_dir` resolves relative paths (the config file's folder)."""

    base_dir: Path = Path()
    store: StoreConfig = StoreConfig()
    logging: LoggingConfig = LoggingConfig()
    ingest: IngestConfig = IngestConfig()
    identity: IdentityConfig = IdentityConfig()
    mailchimp: MailchimpConfig = MailchimpConfig()
    rules: RulesSection = RulesSection()
    daemon: DaemonConfig = DaemonConfig()
    intake: IntakeConfig = IntakeConfig()
    sources: list[SourceConfig] = Field(default_factory=list)

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)
