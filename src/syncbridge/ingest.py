"""Reads connector streams into the cache: the one place that writes records, events and cursors.

Per page, in one transaction: look up stored content hashes, transform only new or changed
records, upsert them, replace their events and errors, and save the page's cursor. An unchanged
record costs one hash comparison and no write; a crash repeats the page, never skips it.

With `parallel`, a stream's first read (no saved cursor: the initial load) runs in a producer
process that reads, hashes and transforms pages while this process writes the previous ones.
It transforms every record, since it cannot see the stored hashes; later reads, mostly of
unchanged records, stay local and transform only what changed.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from .connectors import Stream
from .counts import Counts
from .errors import FatalError, SyncbridgeError
from .gc_tuning import bulk_gc
from .prepare import PreparedPage, PreparedRecord, prepare_page, transform
from .redaction import redact
from .store.bulk import chunks, utcnow
from .store.rawsql import Json, allocate_ids, insert_many
from .store.tables import Event, RecordErrorRow, SourceRecord, StreamCursor
from .transform import RecordTransformer

log = logging.getLogger(__name__)

RECORDS = SourceRecord.__table__
EVENTS = Event.__table__
ERRORS = RecordErrorRow.__table__
CURSORS = StreamCursor.__table__

_RECORD_UPDATE = (
    "payload", "content_hash", "attributes", "identifiers", "source_ts", "deleted", "pending",
    "updated_at", "run_id",
)  # fmt: skip
_QUEUE_PAGES = 4


@dataclass
class StreamStats(Counts):
    read: int = 0
    unchanged: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    events: int = 0
    errors: int = 0


@dataclass
class StreamIngest:
    """Everything needed to ingest one stream."""

    source: str
    stream: Stream
    transformer: RecordTransformer
    run_id: int | None = None
    on_page: Callable[[int], None] | None = None
    parallel: bool = False
    stats: StreamStats = field(default_factory=StreamStats)


def load_cursor(engine: Engine, source: str, stream: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(CURSORS.c.value).where(CURSORS.c.source == source, CURSORS.c.stream == stream)
        ).scalar_one_or_none()


def ingest_stream(engine: Engine, job: StreamIngest) -> StreamStats:
    """Read a stream from its saved cursor to the end; returns what changed."""
    with bulk_gc():
        return _ingest_stream(engine, job)


def _ingest_stream(engine: Engine, job: StreamIngest) -> StreamStats:
    stream = job.stream
    cursor = load_cursor(engine, job.source, stream.name)
    seen: set[str] | None = set() if stream.snapshot else None
    complete = False
    # A first read is mostly new records: transforming them all in a producer process pays.
    # Later reads are mostly unchanged records, which the local path never transforms.
    first_read = cursor is None
    use_producer = job.parallel and first_read
    pages = _produced_pages(job, cursor) if use_producer else _local_pages(job, cursor)
    for page in pages:
        with engine.begin() as conn:
            _write_page(conn, job, page, seen)
            if page.cursor is not None and page.cursor != cursor:
                _save_cursor(conn, job.source, stream.name, page.cursor)
                cursor = page.cursor
        complete = page.complete
        if job.on_page:
            job.on_page(page.read)
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


def _local_pages(job: StreamIngest, cursor: Any) -> Iterator[PreparedPage]:
    for page in job.stream.read(cursor):
        yield prepare_page(page, job.stream.primary_key)


def _produced_pages(job: StreamIngest, cursor: Any) -> Iterator[PreparedPage]:
    """Pages prepared by a forked producer process; falls back to local work without fork."""
    if "fork" not in multiprocessing.get_all_start_methods():
        yield from _local_pages(job, cursor)
        return
    context = multiprocessing.get_context("fork")
    pages: Any = context.Queue(maxsize=_QUEUE_PAGES)
    producer = context.Process(target=_produce, args=(job, cursor, pages), daemon=True)
    producer.start()
    try:
        while True:
            try:
                item = pages.get(timeout=1.0)
            except queue.Empty:
                if not producer.is_alive() and pages.empty():
                    raise FatalError(
                        f"{job.source}/{job.stream.name}: the reader process died "
                        f"(exit code {producer.exitcode})"
                    ) from None
                continue
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield PreparedPage.from_wire(item)
    finally:
        if producer.is_alive():
            producer.terminate()
        producer.join(timeout=5)


def _produce(job: StreamIngest, cursor: Any, pages: Any) -> None:
    """Producer process: read, hash and transform pages; None ends, an exception reports."""
    try:
        for page in job.stream.read(cursor):
            pages.put(prepare_page(page, job.stream.primary_key, job.transformer).to_wire())
        pages.put(None)
    except BaseException as exc:  # sent to the parent, which raises it (same kind if it can)
        where = f"{job.source}/{job.stream.name}"
        report: BaseException = FatalError(redact(f"{where}: {type(exc).__name__}: {exc}"))
        if isinstance(exc, SyncbridgeError):
            with suppress(TypeError):  # error classes with a richer constructor stay wrapped
                report = type(exc)(redact(f"{where}: {exc}"))
        pages.put(report)


def _save_cursor(conn: Connection, source: str, stream: str, value: Any) -> None:
    row = {"source": source, "stream": stream, "value": value, "updated_at": utcnow()}
    insert_many(conn, CURSORS, [row], ["source", "stream"], ["value", "updated_at"])


def _write_page(
    conn: Connection, job: StreamIngest, page: PreparedPage, seen: set[str] | None
) -> None:
    stats = job.stats
    stats.read += page.read
    now = utcnow()
    error_rows = [_error_row(job, where, f, None, why, now) for where, f, why in page.errors]
    if seen is not None:
        seen.update(r.key for r in page.records)
    stored = _stored_hashes(conn, job, [r.key for r in page.records])
    changed = [
        r for r in page.records if (before := stored.get(r.key)) is None or before[1] != r.digest
    ]
    stats.unchanged += len(page.records) - len(changed)
    new_ids = iter(allocate_ids(conn, RECORDS, sum(1 for r in changed if r.key not in stored)))
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for record in changed:
        before = stored.get(record.key)
        record_id = before[0] if before else next(new_ids)
        transform(record, job.transformer)
        error_rows.extend(_error_row(job, record.key, *e, now) for e in record.errors)
        rows.append(_record_row(job, record, record_id, now))
        if record.deleted:
            stats.deleted += 1
            continue
        if before is None:
            stats.inserted += 1
        else:
            stats.updated += 1
        events.extend(
            {
                "record_id": record_id,
                "ordinal": ordinal,
                "profile_id": None,
                "type": event_type,
                "occurred_at": occurred_at,
                "properties": Json(properties),
            }
            for ordinal, event_type, occurred_at, properties in record.events
        )
    if not rows and not error_rows:
        return
    insert_many(conn, RECORDS, rows, ["source", "stream", "external_id"], _RECORD_UPDATE)
    replaced = [stored[r.key][0] for r in changed if r.key in stored]
    for part in chunks(replaced):
        conn.execute(delete(EVENTS).where(EVENTS.c.record_id.in_(part)))
    stats.events += len(events)
    insert_many(conn, EVENTS, events)
    _replace_errors(conn, job, [r.key for r in changed if r.key in stored], error_rows)


def _record_row(
    job: StreamIngest, record: PreparedRecord, record_id: int, now: Any
) -> dict[str, Any]:
    return {
        "id": record_id,
        "source": job.source,
        "stream": job.stream.name,
        "external_id": record.key,
        "payload": Json(record.payload),
        "content_hash": record.digest,
        "attributes": Json(record.attributes),
        "identifiers": Json(record.identifiers),
        "source_ts": record.source_ts,
        "deleted": record.deleted,
        "pending": True,
        "updated_at": now,
        "run_id": job.run_id,
    }


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
    job: StreamIngest,
    key: str | None,
    field_name: str | None,
    value: Any,
    message: str,
    now: Any,
) -> dict[str, Any]:
    return {
        "run_id": job.run_id,
        "source": job.source,
        "stream": job.stream.name,
        "external_id": key,
        "field": field_name,
        "value": None if value is None else str(value)[:2000],
        "message": message,
        "created_at": now,
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
