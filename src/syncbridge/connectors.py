"""The connector contract and the registry of installed connectors.

A connector is configured from one `[[sources]]` table and offers streams. A stream yields pages
of raw records, each with the cursor that is safe to save once the page is committed. Connectors
never write to the cache and never know about profiles: the ingest engine owns writing, cursors
and errors, and the mapping file decides what fields mean.

A stream that declares a `Cursor` (field and type) leaves its high-water mark to the engine:
the engine takes the newest cursor value of the records it is handed, never moves the mark
back, reports values that do not parse, and hands `read()` a `cursors.Resume` (the mark, typed,
and the state the stream saved beside it as `Page.cursor`). A stream without one keeps an
opaque cursor of its own, saved as it gives it (`position` guards it from going back).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .config.models import SourceConfig, StreamConfig
from .cursors import Cursor, Mark, Resume, is_saved_form
from .errors import FatalError

ENTRY_POINT_GROUP = "syncbridge.connectors"
DELETED = "__deleted__"
"""Key a connector sets (to True) on a record that was deleted at the source."""


@dataclass
class Page:
    """Raw records and the cursor that covers them (saved only after they are committed).

    `complete` is True on the last page of a read that covered the whole stream, which lets the
    engine treat records it did not see as deleted for snapshot streams.
    """

    records: list[dict[str, Any]]
    cursor: Any
    """The cursor to save with the page; with a declared `Cursor`, the connector's own state
    saved beside the engine's mark (None when it keeps none)."""
    complete: bool = False
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(where, why) for input the connector could not turn into a record, e.g. a broken line."""
    checkpoint: bool = True
    """False when the pages so far are not in cursor order (a file read half-way, a bulk job's
    unordered results): the engine saves nothing with this page and moves the mark only at the
    next checkpoint page, so a crash before it repeats the pages, never skips one."""
    keys: list[str] | None = None
    """Each record's primary key (`prepare.record_key` of it), when the connector computed
    them already (to report a key that repeats): the engine then does not compute them again."""
    share: float | None = None
    """How much of the whole read is done with this page (0 to 1), when the connector can tell
    (bytes of the files read, records of a counted query): the live display's percentage."""
    expected: int | None = None
    """How many records the whole read will yield, when the connector knows (a COUNT())."""
    live_keys: list[str] = field(default_factory=list)
    """Primary keys the source says are live without sending their records again (an id scan):
    for a `snapshot` stream's complete read they count as seen, so only records neither read
    nor listed are deleted. Nothing is written for them."""


class Stream(ABC):
    """One stream of records with a primary key and an optional cursor field."""

    name: str
    primary_key: tuple[str, ...]
    cursor_field: str | None = None
    cursor: Cursor | None = None
    """The declared cursor: the engine keeps its high-water mark from the records' values."""
    snapshot: bool = False
    """True when a full read returns every live record, so records not returned were deleted."""
    in_process_only: ClassVar[bool] = False
    """True for a stream that acknowledges what it read once the engine stored it (a bus):
    it is read in the writing process, never in a producer process ahead of the writes."""

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The source fields the primary key is read from (for `validate`)."""
        return self.primary_key

    def columns(self) -> Sequence[str] | None:
        """The fields records carry, when known without reading them all (for `validate`)."""
        return None

    def position(self, cursor: Any | None) -> datetime | Mark | None:
        """The high-water mark a stored cursor of this stream stands for (None: it has none,
        e.g. only file fingerprints). With a declared `Cursor`, the engine's mark; a stream
        without one may say, and the engine then refuses to save a cursor whose position is
        before the saved one's (see `cursors.goes_back`)."""
        return self.resume(cursor).mark if self.cursor is not None else None

    def resume(self, stored: Any | None) -> Resume:
        """A stored cursor as the engine hands it to `read()`: the saved form, or an older
        shape this stream stored before the engine kept its mark (`legacy_resume`)."""
        if stored is None:
            return Resume()
        if self.cursor is not None and is_saved_form(stored):
            return Resume(self.cursor.load(stored["mark"]), stored["state"])
        return self.legacy_resume(stored)

    def legacy_resume(self, stored: Any) -> Resume:
        """A cursor in the shape an older version of this stream stored (override to read it);
        by default a bare value is the mark."""
        if self.cursor is not None and not isinstance(stored, dict | list):
            return Resume(self.cursor.load(stored), None)
        return Resume(None, stored)

    @abstractmethod
    def read(self, cursor: Any | None) -> Iterator[Page]:
        """Yield pages of records changed since `cursor` (inclusive boundaries are fine)."""


class StreamOptions(BaseModel):
    """Base for a connector's per-stream options; `name` and `mapping` are the engine's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    mapping: str


class SourceOptions(BaseModel):
    """Base for a connector's source-level options (credentials, endpoints)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Connector(ABC):
    """Base class of connectors. Subclasses declare their option models and build streams."""

    source_options: ClassVar[type[SourceOptions]] = SourceOptions
    stream_options: ClassVar[type[StreamOptions]] = StreamOptions
    pulled: ClassVar[bool] = True
    """False for a connector whose records are pushed to syncbridge (the event intake): the
    daemon schedules no pull of it."""

    def __init__(
        self,
        source: SourceConfig,
        options: SourceOptions,
        streams: list[StreamOptions],
        base_dir: Path,
    ) -> None:
        self.source = source
        self.options = options
        self.stream_configs = streams
        self.base_dir = base_dir

    @abstractmethod
    def streams(self) -> list[Stream]:
        """The configured streams, in config order."""

    def stream_named(self, name: str) -> Stream:
        """One of the configured streams, or an error listing the ones there are."""
        streams = {s.name: s for s in self.streams()}
        if name not in streams:
            known = ", ".join(sorted(streams)) or "none"
            raise FatalError(
                f"source {self.source.name!r} has no stream {name!r} (streams: {known})"
            )
        return streams[name]

    def check(self) -> None:  # noqa: B027 - optional hook; file sources have nothing to check
        """Raise AuthError/FatalError when the source cannot be reached with these settings."""


def available_connectors() -> dict[str, type[Connector]]:
    """Connectors installed through the `syncbridge.connectors` entry-point group."""
    found: dict[str, type[Connector]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def connector_class(name: str) -> type[Connector]:
    """The class of one connector, importing only its module (not every installed one's:
    a files-only setup should not pay for importing the Salesforce client)."""
    points = entry_points(group=ENTRY_POINT_GROUP)
    for ep in points:
        if ep.name == name:
            loaded: type[Connector] = ep.load()
            return loaded
    names = ", ".join(sorted(ep.name for ep in points)) or "none installed"
    raise FatalError(f"unknown connector {name!r} (installed: {names})")


def stream_options_for(cls: type[Connector], stream: StreamConfig) -> StreamOptions:
    return cls.stream_options.model_validate(stream.model_dump())


def build_connector(source: SourceConfig, base_dir: Path) -> Connector:
    """Instantiate the connector of a validated source."""
    cls = connector_class(source.connector)
    options = cls.source_options.model_validate(source.options())
    streams = [stream_options_for(cls, s) for s in source.streams]
    return cls(source, options, streams, base_dir)
