"""Reads connector streams into the cache: the one place that writes records, events and cursors.

Per page, in one transaction: look up stored content hashes, transform only new or changed
records, upsert them, replace their events and errors, and save the page's cursor. An unchanged
record costs one hash comparison and no write; a crash repeats the page, never skips it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from .connectors import DELETED, Page, Stream
from .store.bulk import chunks, utcnow
from .store.rawsql import Json, allocate_ids, dumps, insert_many
from .store.tables import Event, RecordErrorRow, SourceRecord, StreamCursor
from .transform import RecordTransformer

log = logging.getLogger(__name__)

RECORDS = SourceRecord.__table__
EVENTS = Event.__table__
ERRORS = RecordErrorRow.__table__
CURSORS = StreamCursor.__table__

_RECORD_UPDATE = (
    "payload",
    "content_hash",
    "attributes",
    "identifiers",
    "source_ts",
    "deleted",
    "pending",
    "updated_at",
    "run_id",
)


@dataclass
class StreamStats:
    read: int = 0
    unchanged: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    events: int = 0
    errors: int = 0

    def add(self, other: StreamStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in self.__dataclass_fields__}


@dataclass
class _Prepared:
    key: str
    raw: dict[str, Any]
    text: Json
    digest: str
    deleted_marker: bool = False


@dataclass
class StreamIngest:
    """Everything needed to ingest one stream."""

    source: str
    stream: Stream
    transformer: RecordTransformer
    run_id: int | None = None
    on_page: Callable[[int], None] | None = None
    stats: StreamStats = field(default_factory=StreamStats)


def canonical_json(record: dict[str, Any]) -> Json:
    """The record as JSON with sorted keys: hashed for change detection, and stored as is."""
    return Json(dumps(record, sort_keys=True))


def content_hash(record: dict[str, Any]) -> str:
    return _digest(canonical_json(record))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def record_key(record: dict[str, Any], primary_key: tuple[str, ...]) -> str | None:
    parts = []
    for name in primary_key:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        parts.append(str(value).strip())
    return "|".join(parts)


def load_cursor(engine: Engine, source: str, stream: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(CURSORS.c.value).where(CURSORS.c.source == source, CURSORS.c.stream == stream)
        ).scalar_one_or_none()


def ingest_stream(engine: Engine, job: StreamIngest) -> StreamStats:
    """Read a stream from its saved cursor to the end; returns what changed."""
    stream = job.stream
    cursor = load_cursor(engine, job.source, stream.name)
    seen: set[str] | None = set() if stream.snapshot else None
    complete = False
    for page in stream.read(cursor):
        with engine.begin() as conn:
            _write_page(conn, job, page, seen)
            if page.cursor is not None and page.cursor != cursor:
                _save_cursor(conn, job.source, stream.name, page.cursor)
                cursor = page.cursor
        complete = page.complete
        if job.on_page:
            job.on_page(len(page.records))
    if seen is not None and complete:
        if not seen:
            log.warning(
                "%s/%s: a full read returned no records; not treating that as deleting them all",
                job.source,
                stream.name,
            )
            return job.stats
        with engine.begin() as conn:
            job.stats.deleted += _delete_unseen(conn, job, seen)
    return job.stats


def _save_cursor(conn: Connection, source: str, stream: str, value: Any) -> None:
    row = {"source": source, "stream": stream, "value": value, "updated_at": utcnow()}
    insert_many(conn, CURSORS, [row], ["source", "stream"], ["value", "updated_at"])


def _prepare(job: StreamIngest, records: list[dict[str, Any]], errors: list[dict[str, Any]]):
    """Key and hash each record; the last copy of a key in a page wins."""
    prepared: dict[str, _Prepared] = {}
    for raw in records:
        deleted_marker = bool(raw.pop(DELETED, False))
        key = record_key(raw, job.stream.primary_key)
        if key is None:
            fields = ", ".join(job.stream.primary_key)
            errors.append(_error_row(job, None, fields, None, "record has no primary key value"))
            continue
        text = canonical_json(raw)
        digest = _digest(text)
        if deleted_marker:  # a delete of unchanged content is still a change
            digest = _digest("deleted:" + digest)
        prepared[key] = _Prepared(key, raw, text, digest, deleted_marker)
    return prepared


def _write_page(conn: Connection, job: StreamIngest, page: Page, seen: set[str] | None) -> None:
    stats = job.stats
    stats.read += len(page.records)
    error_rows = [_error_row(job, where, None, None, why) for where, why in page.errors]
    prepared = _prepare(job, page.records, error_rows)
    if seen is not None:
        seen.update(prepared)
    stored = _stored_hashes(conn, job, list(prepared))
    changed = [
        item
        for key, item in prepared.items()
        if (before := stored.get(key)) is None or before[1] != item.digest
    ]
    stats.unchanged += len(prepared) - len(changed)
    new_ids = iter(allocate_ids(conn, RECORDS, sum(1 for i in changed if i.key not in stored)))
    now = utcnow()
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for item in changed:
        before = stored.get(item.key)
        record_id = before[0] if before else next(new_ids)
        out = job.transformer.apply(item.raw)
        deleted = item.deleted_marker or out.deleted
        error_rows.extend(_error_row(job, item.key, e.field, e.value, e.reason) for e in out.errors)
        rows.append(
            {
                "id": record_id,
                "source": job.source,
                "stream": job.stream.name,
                "external_id": item.key,
                "payload": item.text,
                "content_hash": item.digest,
                "attributes": out.attributes,
                "identifiers": [list(i) for i in out.identifiers],
                "source_ts": datetime.fromisoformat(out.source_ts) if out.source_ts else None,
                "deleted": deleted,
                "pending": True,
                "updated_at": now,
                "run_id": job.run_id,
            }
        )
        if deleted:
            stats.deleted += 1
            continue
        if before is None:
            stats.inserted += 1
        else:
            stats.updated += 1
        events.extend(
            {
                "record_id": record_id,
                "ordinal": e.index,
                "profile_id": None,
                "type": e.type,
                "occurred_at": datetime.fromisoformat(e.occurred_at),
                "properties": e.properties,
            }
            for e in out.events
        )
    if not rows and not error_rows:
        return
    insert_many(conn, RECORDS, rows, ["source", "stream", "external_id"], _RECORD_UPDATE)
    replaced = [stored[i.key][0] for i in changed if i.key in stored]
    for part in chunks(replaced):
        conn.execute(delete(EVENTS).where(EVENTS.c.record_id.in_(part)))
    stats.events += len(events)
    insert_many(conn, EVENTS, events)
    _replace_errors(conn, job, [i.key for i in changed if i.key in stored], error_rows)


def _stored_hashes(
    conn: Connection, job: StreamIngest, keys: list[str]
) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    r = RECORDS.c
    for part in chunks(keys):
        query = select(r.external_id, r.id, r.content_hash).where(
            r.source == job.source, r.stream == job.stream.name, r.external_id.in_(part)
        )
        for external_id, record_id, digest in conn.execute(query):
            found[external_id] = (record_id, digest)
    return found


def _replace_errors(
    conn: Connection, job: StreamIngest, changed_keys: list[str], error_rows: list[dict[str, Any]]
) -> None:
    """The errors of a changed record are those of its newest version only."""
    e = ERRORS.c
    for part in chunks(changed_keys):
        conn.execute(
            delete(ERRORS).where(
                e.source == job.source, e.stream == job.stream.name, e.external_id.in_(part)
            )
        )
    job.stats.errors += len(error_rows)
    insert_many(conn, ERRORS, error_rows)


def _error_row(
    job: StreamIngest, key: str | None, field_name: str | None, value: Any, message: str
) -> dict[str, Any]:
    return {
        "run_id": job.run_id,
        "source": job.source,
        "stream": job.stream.name,
        "external_id": key,
        "field": field_name,
        "value": None if value is None else str(value)[:2000],
        "message": message,
        "created_at": utcnow(),
    }


def _delete_unseen(conn: Connection, job: StreamIngest, seen: set[str]) -> int:
    """For snapshot streams: records stored as live but absent from a complete read are deleted."""
    r = RECORDS.c
    live = conn.execute(
        select(r.id, r.external_id).where(
            r.source == job.source, r.stream == job.stream.name, r.deleted.is_(False)
        )
    ).all()
    gone = [record_id for record_id, key in live if key not in seen]
    for part in chunks(gone):
        conn.execute(
            update(RECORDS)
            .where(r.id.in_(part))
            .values(
                deleted=True, pending=True, content_hash="", updated_at=utcnow(), run_id=job.run_id
            )
        )
        conn.execute(delete(EVENTS).where(EVENTS.c.record_id.in_(part)))
    return len(gone)


__all__ = ["StreamIngest", "StreamStats", "ingest_stream", "load_cursor"]
