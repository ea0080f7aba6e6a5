"""Re-maps a stream's stored records when its mapping changed, without reading the source.

Unchanged files are skipped and unchanged rows hash equal, so an edited mapping would never
reach the records already in the cache. Every stored record keeps the raw payload it arrived
with, so the cache can apply the new mapping itself. Each stream's mapping fingerprint
(`transform.mapping_fingerprint`) is kept in `cache_setting`; at the start of a cycle, a stream
whose fingerprint differs from the stored one has its stored payloads transformed again, a page
at a time (keyset by record key, one transaction each, so memory stays bounded at any cache
size). A record whose attributes, identifiers, timestamp, deleted flag or events come out
different is written by ingestion's own writer (`ingest.write_changed`): it turns pending, and
identity resolution, the rules and the push follow as for a record whose content changed. A
record whose per-record errors alone changed gets its errors replaced. Records the source
deleted (a delete marker, or gone from a snapshot) stay deleted whatever the mapping says.

A stream without a stored fingerprint (its first run) just has it stored. The new fingerprint
is stored after the last page, so a crash repeats the re-map, which rewrites only what does not
match yet.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select, text

from .counts import Counts
from .gc_tuning import bulk_gc
from .hashing import content_hash
from .ingest import StreamIngest, StreamStats, error_row, replace_errors, write_changed
from .prepare import PreparedRecord, transform
from .store.bulk import utcnow
from .store.rawsql import insert_many, read_datetime, read_json, select_in
from .store.tables import CacheSetting

log = logging.getLogger(__name__)

SETTINGS = CacheSetting.__table__
FINGERPRINTS_KEY = "mapping_fingerprints"
"""One `cache_setting` row: {source: {stream: fingerprint}}."""
PAGE_SIZE = 5000

_PAGE_SQL = (
    "SELECT id, external_id, CAST(payload AS TEXT), content_hash, attributes, identifiers, "
    "source_ts, deleted FROM source_record WHERE source = :source AND stream = :stream{after} "
    "ORDER BY external_id LIMIT :limit"
)
_FIRST_PAGE = text(_PAGE_SQL.format(after=""))
_NEXT_PAGE = text(_PAGE_SQL.format(after=" AND external_id > :after"))
_EVENTS_SQL = (
    "SELECT record_id, ordinal, type, occurred_at, properties FROM event WHERE record_id IN ({in})"
)
_ERRORS_SQL = (
    "SELECT external_id, field, value, message FROM record_error "
    "WHERE source = ? AND stream = ? AND external_id IN ({in})"
)

Mapped = tuple[Any, Any, datetime | str | None, bool, list[tuple[Any, ...]]]
"""(attributes, identifiers, source timestamp, deleted, events) of one record."""


@dataclass
class RemapStats(Counts):
    remapped: int = 0
    """Stored records transformed with the new mapping."""
    changed: int = 0
    """Of those, records whose mapped content changed (written, pending)."""
    events: int = 0
    errors: int = 0


def remap_changed_mappings(engine: Engine, jobs: list[StreamIngest]) -> dict[str, RemapStats]:
    """Re-map the stored records of every stream whose mapping changed since the last cycle;
    returns what that did for each re-mapped stream ("source/stream")."""
    stored = _stored_fingerprints(engine)
    done: dict[str, RemapStats] = {}
    for job in jobs:
        name, current = job.stream.name, job.transformer.fingerprint
        before = stored.get(job.source, {}).get(name)
        if before == current:
            continue
        # No fingerprint yet: a new stream (nothing stored, the pass is one empty query), or
        # a cache from before fingerprints, whose mapping may have been edited since its
        # records were stored. Either way its records are re-mapped once.
        where = f"{job.source}/{name}"
        log.debug("%s: mapping fingerprint changed: re-mapping its stored records", where)
        stats = remap_stream(engine, job)
        if stats.remapped:
            done[where] = stats
            log.info(
                "%s: mapping changed, %d stored records re-mapped, %d changed",
                where, stats.remapped, stats.changed,
            )  # fmt: skip
        stored.setdefault(job.source, {})[name] = current
        with engine.begin() as conn:
            row = {"key": FINGERPRINTS_KEY, "value": stored, "updated_at": utcnow()}
            insert_many(conn, SETTINGS, [row], ["key"], ["value", "updated_at"])
    return done


def remap_stream(engine: Engine, job: StreamIngest) -> RemapStats:
    """Transform every stored record of the stream with `job.transformer`, page by page, and
    write those that came out different."""
    stats = RemapStats()
    writer = replace(job, stats=StreamStats())  # the writer's counters, apart from the read's
    size = PAGE_SIZE
    after: str | None = None
    with bulk_gc():
        while True:
            with engine.begin() as conn:
                params = {"source": job.source, "stream": job.stream.name, "limit": size}
                query = _FIRST_PAGE if after is None else _NEXT_PAGE
                rows = conn.execute(query, {**params, "after": after}).all()
                if rows:
                    _remap_page(conn, writer, rows, stats)
            if len(rows) < size:
                break
            after = rows[-1][1]
    stats.events, stats.errors = writer.stats.events, writer.stats.errors
    return stats


def _remap_page(
    conn: Connection, job: StreamIngest, rows: Sequence[Any], stats: RemapStats
) -> None:
    events_before = _stored_events(conn, [row[0] for row in rows])
    errors_before = _stored_errors(conn, job, [row[1] for row in rows])
    stored: dict[str, tuple[int, str]] = {}
    changed: list[PreparedRecord] = []
    errors_changed: list[PreparedRecord] = []
    for record_id, key, payload, digest, attributes, identifiers, ts, deleted in rows:
        if deleted and digest != content_hash(payload.encode()):
            continue  # deleted by the source (its hash says so): no mapping brings it back
        record = PreparedRecord(key, digest, payload, orjson.loads(payload))
        transform(record, job.transformer)
        stats.remapped += 1
        stored[key] = (record_id, digest)
        before: Mapped = (
            read_json(attributes), read_json(identifiers), read_datetime(ts), bool(deleted),
            events_before.get(record_id, []),
        )  # fmt: skip
        if _mapped(record) != before:
            changed.append(record)
        elif Counter(record.errors) != errors_before.get(key, Counter()):
            errors_changed.append(record)
    now = utcnow()
    stats.changed += len(changed)
    write_changed(conn, job, changed, stored, [], now)
    error_rows = [error_row(job, r.key, *e, now) for r in errors_changed for e in r.errors]
    replace_errors(conn, job, [r.key for r in errors_changed], error_rows)


def _mapped(record: PreparedRecord) -> Mapped:
    """What the writer would store for a transformed record, in the form the store returns."""
    events = [] if record.deleted else [
        (ordinal, kind, _moment(at), orjson.loads(properties))
        for ordinal, kind, at, properties in sorted(record.events, key=lambda e: e[0])
    ]  # fmt: skip
    return (
        orjson.loads(record.attributes), orjson.loads(record.identifiers),
        _moment(record.source_ts), record.deleted, events,
    )  # fmt: skip


def _moment(value: str | None) -> datetime | str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stored_events(conn: Connection, record_ids: list[int]) -> dict[int, list[tuple[Any, ...]]]:
    events: dict[int, list[tuple[Any, ...]]] = {}
    for record_id, ordinal, kind, at, properties in select_in(conn, _EVENTS_SQL, (), record_ids):
        entry = (ordinal, kind, read_datetime(at), read_json(properties))
        events.setdefault(record_id, []).append(entry)
    for entries in events.values():
        entries.sort(key=lambda e: e[0])
    return events


def _stored_errors(
    conn: Connection, job: StreamIngest, keys: list[str]
) -> dict[str, Counter[tuple[Any, ...]]]:
    errors: dict[str, Counter[tuple[Any, ...]]] = {}
    params = (job.source, job.stream.name)
    for key, field, value, message in select_in(conn, _ERRORS_SQL, params, keys):
        errors.setdefault(key, Counter())[(field, value, message)] += 1
    return errors


def _stored_fingerprints(engine: Engine) -> dict[str, dict[str, str]]:
    with engine.connect() as conn:
        value = conn.execute(
            select(SETTINGS.c.value).where(SETTINGS.c.key == FINGERPRINTS_KEY)
        ).scalar_one_or_none()
    return {source: dict(streams) for source, streams in (value or {}).items()}


__all__ = ["RemapStats", "remap_changed_mappings", "remap_stream"]
