"""The pure half of ingestion: key, hash and transform raw records, with no database access.

It runs in the ingest process or, for large reads, in a producer process beside it (see
`ingest.py`), so that parsing and cleaning use one core while writing uses the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .connectors import DELETED, Page
from .hashing import canonical_json, content_hash
from .store.rawsql import dumps
from .transform import RecordTransformer


@dataclass(slots=True)
class PreparedRecord:
    """One record, keyed and hashed; the mapped fields are filled by `transform`."""

    key: str
    digest: str
    payload: str
    raw: dict[str, Any] | None
    deleted_marker: bool = False
    transformed: bool = False
    attributes: str = "{}"
    identifiers: str = "[]"
    source_ts: str | None = None
    deleted: bool = False
    events: list[tuple[int, str, str, str]] = field(default_factory=list)
    """(ordinal, type, occurred_at ISO, properties JSON)"""
    errors: list[tuple[str, str | None, str]] = field(default_factory=list)
    """(field, value, reason)"""

    def to_tuple(self) -> tuple[Any, ...]:
        """A transformed record as a plain tuple: pickles ten times faster than the object."""
        return (
            self.key, self.digest, self.payload, self.attributes, self.identifiers,
            self.source_ts, self.deleted, self.events, self.errors,
        )  # fmt: skip

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> PreparedRecord:
        key, hashed, payload, attributes, identifiers, source_ts, deleted, events, errors = values
        return cls(
            key, hashed, payload, None, deleted, True, attributes, identifiers, source_ts,
            deleted, events, errors,
        )  # fmt: skip


@dataclass
class PreparedPage:
    records: list[PreparedRecord]
    errors: list[tuple[str | None, str | None, str]]
    """Page-level problems: (where, field, reason), e.g. a broken line or a missing key."""
    cursor: Any
    complete: bool
    read: int
    checkpoint: bool = True
    """See `Page.checkpoint`."""
    share: float | None = None
    expected: int | None = None
    """See `Page.share` and `Page.expected` (progress only)."""
    live_keys: list[str] = field(default_factory=list)
    """See `Page.live_keys`."""

    def to_wire(self) -> tuple[Any, ...]:
        records = [r.to_tuple() for r in self.records]
        return (records, self.errors, self.cursor, self.complete, self.read, self.checkpoint,
                self.share, self.expected, self.live_keys)  # fmt: skip

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> PreparedPage:
        records, errors, cursor, complete, read, checkpoint, share, expected, live = wire
        prepared = [PreparedRecord.from_tuple(r) for r in records]
        return cls(prepared, errors, cursor, complete, read, checkpoint, share, expected, live)


def record_key(record: dict[str, Any], primary_key: tuple[str, ...]) -> str | None:
    """The record's key: its primary key values, stripped, joined by `|`; None when one is
    missing or blank. A one-column key (the usual) takes a shorter path: this runs per record."""
    if len(primary_key) == 1:
        value = record.get(primary_key[0])
        if value.__class__ is str:
            return value.strip() or None
        return None if value is None else str(value).strip()
    parts = []
    for name in primary_key:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        parts.append(str(value).strip())
    return "|".join(parts)


def prepare_page(
    page: Page,
    primary_key: tuple[str, ...],
    transformer: RecordTransformer | None = None,
) -> PreparedPage:
    """Key and hash a page's records (the last copy of a key wins); transform them too when a
    transformer is given, dropping the raw record so the result is cheap to send between
    processes."""
    errors: list[tuple[str | None, str | None, str]] = [(w, None, why) for w, why in page.errors]
    prepared: dict[str, PreparedRecord] = {}
    keys = page.keys if page.keys is not None and len(page.keys) == len(page.records) else None
    for index, raw in enumerate(page.records):
        deleted_marker = bool(raw.pop(DELETED, False))
        key = keys[index] if keys is not None else record_key(raw, primary_key)
        if key is None:
            errors.append((None, ", ".join(primary_key), "record has no primary key value"))
            continue
        data = canonical_json(raw)  # hashed for change detection, stored as the payload
        hashed = content_hash(data)
        if deleted_marker:  # a delete of unchanged content is still a change
            hashed = content_hash(b"deleted:" + hashed.encode())
        prepared[key] = PreparedRecord(key, hashed, data.decode(), raw, deleted_marker)
    records = list(prepared.values())
    if transformer is not None:
        for record in records:
            transform(record, transformer)
            record.raw = None
    return PreparedPage(
        records, errors, page.cursor, page.complete, len(page.records), page.checkpoint,
        page.share, page.expected, page.live_keys,
    )  # fmt: skip


def transform(record: PreparedRecord, transformer: RecordTransformer) -> None:
    """Fill in what the mapping makes of the record (idempotent)."""
    if record.transformed:
        return
    assert record.raw is not None
    out = transformer.apply(record.raw)
    record.attributes = dumps(out.attributes)
    record.identifiers = dumps(out.identifiers)  # (kind, value) pairs as JSON arrays
    record.source_ts = out.source_ts
    record.deleted = (record.deleted_marker or out.deleted) and not out.alias  # merged: an alias
    record.events = [(e.index, e.type, e.occurred_at, dumps(e.properties)) for e in out.events]
    record.errors = [
        (e.field, None if e.value is None else str(e.value)[:2000], e.reason) for e in out.errors
    ]
    record.transformed = True
