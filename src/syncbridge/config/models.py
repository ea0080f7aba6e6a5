"""The validated shape of `config.toml`: frozen pydantic models, parsed once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


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


class MergeFieldConfig(Frozen):
    """A profile attribute (or a Liquid template over attributes) written to a merge field."""

    tag: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,9}$")
    name: str = Field(min_length=1, max_length=100)
    type: MergeFieldType = "text"
    source: str | None = None
    template: str | None = None
    choices: list[str] = Field(default_factory=list)

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

    def options(self) -> dict[str, object]:
        """The connector-specific keys of this source."""
        return dict(self.model_extra or {})


class RulesSection(Frozen):
    file: str | None = None
    """A rules file (traits, behaviour tags, segments, content), e.g. mappings/rules.toml."""


class Config(Frozen):
    """The whole configuration. `base_dir` resolves relative paths (the config file's folder)."""

    base_dir: Path = Path()
    store: StoreConfig = StoreConfig()
    logging: LoggingConfig = LoggingConfig()
    ingest: IngestConfig = IngestConfig()
    identity: IdentityConfig = IdentityConfig()
    mailchimp: MailchimpConfig = MailchimpConfig()
    rules: RulesSection = RulesSection()
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
