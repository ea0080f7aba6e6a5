"""The validated shape of `config.toml`: frozen pydantic models, parsed once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


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
    """Read and transform in a second process while this one writes (uses two cores)."""


class IdentityConfig(Frozen):
    """How records of one person merge, and which source's value wins per attribute."""

    source_priority: list[str] = Field(default_factory=list)
    attribute_priority: dict[str, list[str]] = Field(default_factory=dict)
    default_phone_region: str | None = "US"
    match_on_phone: bool = False
    """Phones join records only when enabled: households and switchboards share numbers."""


class MailchimpConfig(Frozen):
    api_key: SecretStr | None = None
    api_base_url: str | None = None

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


class Config(Frozen):
    """The whole configuration. `base_dir` resolves relative paths (the config file's folder)."""

    base_dir: Path = Path()
    store: StoreConfig = StoreConfig()
    logging: LoggingConfig = LoggingConfig()
    ingest: IngestConfig = IngestConfig()
    identity: IdentityConfig = IdentityConfig()
    mailchimp: MailchimpConfig = MailchimpConfig()
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
