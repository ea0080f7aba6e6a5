"""Reads connector streams into the cache: the one place that writes records, events and cursors.

Per page, in one transaction: look up stored content hashes, transform only new or changed
records, upsert them, replace their events and errors, and save the page's cursor. An unchanged
record costs one hash comparison and no write; a crash repeats the page, never skips it.

With `parallel`, a stream's first read (no saved cursor: the initial load) runs in a producer
process that reads, hashes and transforms pages while this process writes the previous ones;
several streams' producers run at once (`workers`), so parsing and cleaning use every core
while this process, SQLite's one writer, stores whichever page is ready. A producer transforms
every record, since it cannot see the stored hashes; later reads, mostly of unchanged records,
stay local and transform only what changed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, or_, select, update

from . import metrics
from .children import end_with_parent, reported
from .connectors import DELETED, Page, Stream
from .counts import Counts
from .cursors import goes_back, later, saved_form
from .errors import FatalError, SyncbridgeError
from .gc_tuning import bulk_gc
from .prepare import PreparedPage, PreparedRecord, prepare_page, record_key, transform
from .store import journal
from .store.bulk import chunks, utcnow
from .store.rawsql import (
    allocate_ids,
    datetime_binder,
    insert_many,
    insert_tuples,
    read_json,
    select_in,
)
from .store.statistics import TableStatistics
from .store.tables import Event, RecordErrorRow, SourceRecord, StreamCursor
from .transform import RecordTransformer

log = logging.getLogger(__name__)

RECORDS = SourceRecord.__table__
EVENTS = Event.__table__
ERRORS = RecordErrorRow.__table__
CURSORS = StreamCursor.__table__

_RECORD_COLUMNS = (
    "id", "source", "stream", "external_id", "payload", "content_hash", "attributes",
    "identifiers", "source_ts", "deleted", "pending", "updated_at", "run_id",
)  # fmt: skip
_RECORD_KEY = ("source", "stream", "external_id")
_RECORD_UPDATE = _RECORD_COLUMNS[4:]
_EVENT_COLUMNS = ("record_id", "ordinal", "profile_id", "type", "occurred_at", "properties")
_QUEUE_PAGES = 4
_PRODUCER_NICENESS = 5
"""Producers yield the CPU to this process: with more producers than spare cores, fair shares
would hold back the single writer that every page has to pass through."""


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
    on_page: Callable[[int, float | None, int | None], None] | None = None
    """Told each committed page's records read, share of the read done, and expected total."""
    parallel: bool = False
    stats: StreamStats = field(default_factory=StreamStats)


def load_cursor(engine: Engine, source: str, stream: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(CURSORS.c.value).where(CURSORS.c.source == source, CURSORS.c.stream == stream)
        ).scalar_one_or_none()


def ingest_stream(engine: Engine, job: StreamIngest) -> StreamStats:
    """Read a stream from its saved cursor to the end; returns what changed."""
    return ingest_streams(engine, [job], workers=1)[0]


def ingest_streams(engine: Engine, jobs: list[StreamIngest], workers: int = 2) -> list[StreamStats]:
    """Read several streams, each from its saved cursor to the end.

    First reads of `parallel` jobs run in up to `workers` producer processes at once while this
    process writes whichever page is ready (SQLite has one writer; pages of different streams
    are independent transactions). The other jobs are read here, one after the other.

    A stream that fails (a FatalError or other SyncbridgeError from its source) does not stop
    the others: they are read to the end, then `StreamsFailed` reports every failure. Any other
    exception (the store failing, a crash) stops everything at once.
    """
    failures: list[SyncbridgeError] = []
    with bulk_gc():
        statistics = TableStatistics(engine)
        writers = [_StreamWriter(engine, job, statistics) for job in jobs]
        forking = "fork" in multiprocessing.get_all_start_methods()
        produced = [
            w for w in writers
            if forking and w.job.parallel and w.first_read and not w.job.stream.in_process_only
        ]  # fmt: skip
        if produced:
            failures += _write_produced(produced, max(1, workers))
        for writer in writers:
            if writer not in produced:
                writer.announce()
                try:
                    with closing_pages(writer.job.stream.read(writer.cursor)) as pages:
                        for page in pages:
                            writer.write(prepare_page(page, writer.job.stream.primary_key))
                except SyncbridgeError as exc:
                    failures.append(_failed(writer, exc))
                    continue
                writer.finish()
    if failures:
        raise StreamsFailed(failures)
    return [job.stats for job in jobs]


class StreamsFailed(FatalError):
    """Some streams failed; the others were read. `failures` holds each stream's error."""

    def __init__(self, failures: list[SyncbridgeError]) -> None:
        super().__init__("; ".join(str(f) for f in failures))
        self.failures = failures

    def first(self) -> SyncbridgeError:
        """The error to raise on: the only one as it is (an AuthError stays one), or all."""
        return self.failures[0] if len(self.failures) == 1 else self


def _failed(writer: _StreamWriter, exc: SyncbridgeError) -> SyncbridgeError:
    log.error("%s failed: %s; reading the other streams", writer.where, exc)
    return exc


class _StreamWriter:
    """The writing side of one stream: a transaction per page with its cursor, then the
    deletes a complete snapshot implies. A crash repeats a page, never skips one."""

    def __init__(self, engine: Engine, job: StreamIngest, statistics: TableStatistics) -> None:
        self.engine = engine
        self.job = job
        self.statistics = statistics
        self.where = f"{job.source}/{job.stream.name}"
        self.stored = load_cursor(engine, job.source, job.stream.name)
        # A first read is mostly new records: transforming them all in a producer process
        # pays. Later reads are mostly unchanged records, which the local path never transforms.
        self.first_read = self.stored is None
        self.cursor: Any = self.stored
        """What `read()` is handed: the stored cursor, or with a declared `Cursor` a Resume
        (the engine's mark and the stream's own state, older stored shapes read too)."""
        self.mark: Any = None
        self.pending: Any = None
        """The newest cursor value of pages after the last checkpoint (not saved yet)."""
        if job.stream.cursor is not None:
            self.cursor = job.stream.resume(self.stored)
            self.mark = self.cursor.mark
        self.seen: set[str] | None = set() if job.stream.snapshot else None
        self.started = utcnow()
        """Records written after this (a webhook, the intake, another agent) are newer than
        what this read saw: its complete page does not judge them."""
        self.complete = False
        self.reported: set[tuple[str | None, str | None, str]] = set()
        """Located page errors already stored by this read: a repeated page adds none."""

    def announce(self) -> None:
        log.info("reading %s%s", self.where, " (first read)" if self.first_read else "")

    def write(self, page: PreparedPage) -> None:
        stats = self.job.stats
        inserted, events = stats.inserted, stats.events
        page.errors = [e for e in page.errors if e[0] is None or e not in self.reported]
        self.reported.update(e for e in page.errors if e[0] is not None)
        before = stats.as_dict()
        moved = False
        saving = self._marked(page) if self.job.stream.cursor is not None else page.cursor
        with self.engine.begin() as conn:
            _write_page(conn, self.job, page, self.seen)
            if (
                page.checkpoint
                and saving is not None
                and saving != self.stored
                and (self.job.stream.cursor is not None or self._forward(page))
            ):
                _save_cursor(conn, self.job.source, self.job.stream.name, saving)
                self.stored, moved = saving, True
        if moved and self.job.stream.cursor is not None:
            self.mark, self.pending = self.job.stream.resume(saving).mark, None
        if self.job.stream.cursor is None:
            self.cursor = self.stored
        self.statistics.wrote(RECORDS.name, stats.inserted - inserted)
        self.statistics.wrote(EVENTS.name, stats.events - events)
        metrics.page_committed(self.job.source, self.job.stream.name, page.read,
                               stats.errors - before["errors"])  # fmt: skip
        if log.isEnabledFor(logging.DEBUG):
            _log_page(self.where, page.read, before, stats.as_dict(), moved, self.stored)
        self.complete = page.complete
        if self.job.on_page:
            self.job.on_page(page.read, page.share, page.expected)

    def _marked(self, page: PreparedPage) -> Any:
        """The cursor to save with a page of a stream with a declared `Cursor`: the newest of
        the saved mark and the page's parsed cursor values (so it never moves back), beside
        the page's state. A value that does not parse becomes an error of its record, which
        still loads; it does not move the mark. On a page that is not a checkpoint the newest
        value waits (`pending`) for the next one."""
        spec = self.job.stream.cursor
        assert spec is not None
        newest = self.pending
        for record in page.records:
            raw = record.raw if record.raw is not None else orjson.loads(record.payload)
            try:
                value = spec.value_of(raw)
            except ValueError as exc:
                transform(record, self.job.transformer)  # its errors are complete, then ours
                shown = str(raw.get(spec.field))
                why = (f"cursor field {spec.field!r}: {shown[:80]!r} is {exc}; the record "
                       "loads but does not move the stream's high-water mark")  # fmt: skip
                if (spec.field, shown[:2000], why) not in record.errors:
                    record.errors.append((spec.field, shown[:2000], why))
                continue
            newest = later(newest, value)
        self.pending = newest
        if not page.checkpoint:
            return None
        return saved_form(spec, later(self.mark, newest), page.cursor)

    def _forward(self, page: PreparedPage) -> bool:
        """False for a cursor whose position is before the saved one's: saving it would
        read again what was read (at best). The page's records are stored all the same."""
        stream = self.job.stream
        before, after = stream.position(self.stored), stream.position(page.cursor)
        if goes_back(before, after):
            log.warning("%s: not moving the cursor back from %s to %s", self.where, before, after)
            return False
        return True

    def finish(self) -> None:
        if self.seen is None or not self.complete:
            return
        if not self.seen:
            log.warning(
                "%s: a full read returned no records; not treating that as deleting them all",
                self.where,
            )
            return
        with self.engine.begin() as conn:
            self.job.stats.deleted += _delete_unseen(conn, self.job, self.seen, self.started)


def _log_page(
    where: str,
    records: int,
    before: dict[str, int],
    after: dict[str, int],
    moved: bool,
    cursor: Any,
) -> None:
    """The debug line of a committed page: what it changed, and where the cursor stands (its
    value, unless it could be an email address, as a SQL source's cursor on email might be)."""
    changed = " ".join(
        f"{k}={after[k] - before[k]}"
        for k in ("inserted", "updated", "unchanged", "deleted", "events", "errors")
    )
    text = str(cursor)
    shown = "(value not shown)" if "@" in text else (text[:200] + "…" if len(text) > 200 else text)
    log.debug(
        "%s: page committed: %d read, %s; cursor %s",
        where, records, changed, f"moved to {shown}" if moved else "not moved",
    )  # fmt: skip


def _write_produced(writers: list[_StreamWriter], workers: int) -> list[SyncbridgeError]:
    """Run a producer process per stream, at most `workers` at once, and write their pages
    as they arrive on one shared queue (tagged with the stream's index). Returns the errors of
    streams that failed; the others are read to the end."""
    failures: list[SyncbridgeError] = []
    context = multiprocessing.get_context("fork")
    pages: Any = context.Queue(maxsize=_QUEUE_PAGES * workers)
    waiting = list(enumerate(writers))
    running: dict[int, Any] = {}
    suspects: set[int] = set()
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                index, writer = waiting.pop(0)
                writer.announce()
                args = (index, writer.job, writer.cursor, pages, os.getpid())
                running[index] = context.Process(target=_produce, args=args, daemon=True)
                running[index].start()
            try:
                index, item = pages.get(timeout=1.0)
            except queue.Empty:
                # Dead and silent for a whole wait: whatever it sent before dying has arrived.
                dead = {i for i, process in running.items() if not process.is_alive()}
                for lost in sorted(dead & suspects):
                    process = running.pop(lost)
                    died = f"the reader process died (exit code {process.exitcode})"
                    failures.append(
                        _failed(writers[lost], FatalError(f"{writers[lost].where}: {died}"))
                    )
                suspects = dead - suspects
                continue
            if item is None:
                running.pop(index).join(timeout=5)
                writers[index].finish()
            elif isinstance(item, SyncbridgeError):  # see `children.reported`
                running.pop(index).join(timeout=5)
                failures.append(_failed(writers[index], item))
            else:
                writers[index].write(PreparedPage.from_wire(item))
        return failures
    finally:
        for process in running.values():
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)


def _produce(index: int, job: StreamIngest, cursor: Any, pages: Any, parent: int) -> None:
    """Producer process: read, hash and transform pages; None ends, an exception reports.
    It ends with its parent: a killed run leaves no reader behind."""
    end_with_parent(parent)
    with suppress(OSError):
        os.nice(_PRODUCER_NICENESS)
    try:
        with closing_pages(job.stream.read(cursor)) as read:
            for page in read:
                prepared = prepare_page(page, job.stream.primary_key, job.transformer)
                pages.put((index, prepared.to_wire()))
        pages.put((index, None))
    except BaseException as exc:  # the parent records it as the stream's failure
        pages.put((index, reported(f"{job.source}/{job.stream.name}", exc)))


@contextmanager
def closing_pages(pages: Iterator[Page]) -> Iterator[Iterator[Page]]:
    """A stream's pages, closed however the reading ends. A read abandoned by an error is
    closed at once, not whenever the collector gets to it (it may sit in a reference cycle
    with the error's traceback while collections are rare): its server-side cursor and
    transaction end, and a bus hands its unstored page back, before anything else runs."""
    try:
        yield pages
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def append_records(engine: Engine, job: StreamIngest, records: list[dict[str, Any]]) -> int:
    """Store records pushed to syncbridge (the event intake) as one page of `job`'s stream, in
    one transaction with their journal entries. The first copy of a key wins: a key already
    stored, or repeated among `records`, is not written again (Segment's `messageId`
    de-duplication). Returns how many records were new."""
    primary_key = job.stream.primary_key
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record_key(record, primary_key)
        if key is not None and key not in first:
            first[key] = record
    with engine.begin() as conn:
        stored = _stored_hashes(conn, job, list(first))
        fresh = [r for k, r in first.items() if k not in stored]
        page = prepare_page(Page(fresh, None, keys=[k for k in first if k not in stored]),
                            primary_key)  # fmt: skip
        write_changed(conn, job, page.records, {}, [], utcnow())
        job.stats.read += len(records)
        job.stats.unchanged += len(records) - len(fresh)
    metrics.page_committed(job.source, job.stream.name, len(records), 0)
    return len(fresh)


def write_unless_stale(
    conn: Connection,
    job: StreamIngest,
    records: list[dict[str, Any]],
    version: str,
    carry: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
) -> set[int]:
    """Store records pushed one by one by a source that does not promise their order (Shopify's
    webhooks), in the caller's transaction (so the caller can commit its own rows with them),
    with their journal entries as `append_records` does.

    A record whose `version` field (ISO 8601, e.g. `updatedAt`) is older than the stored
    record's is not written, nor one that a newer copy among `records` supersedes: a late
    retry must not undo a later change. A deleted record (`DELETED`) is applied regardless,
    and an update never brings a deleted record back (such a source does not reuse ids, so it
    can only be older than the delete). A missing or unreadable version never makes a record
    stale. `carry(record, stored_payload)` may complete a record with fields the push does not
    carry but the stored version holds. Returns the indexes of the records not written because
    they were stale."""
    primary_key = job.stream.primary_key
    stale: set[int] = set()
    chosen: dict[str, int] = {}
    for index, record in enumerate(records):
        key = record_key(record, primary_key)
        if key is None:
            continue
        previous = chosen.get(key)
        if previous is None or _supersedes(record, records[previous], version):
            if previous is not None:
                stale.add(previous)
            chosen[key] = index
        else:
            stale.add(index)
    sql = (
        "SELECT external_id, id, content_hash, payload, deleted FROM source_record "
        "WHERE source = ? AND stream = ? AND external_id IN ({in})"
    )
    stored: dict[str, tuple[int, str]] = {}
    fresh: list[dict[str, Any]] = []
    keys: list[str] = []
    rows = select_in(conn, sql, (job.source, job.stream.name), list(chosen))
    found = {key: (rid, digest, read_json(payload), bool(gone))
             for key, rid, digest, payload, gone in rows}  # fmt: skip
    for key, index in chosen.items():
        record = records[index]
        before = found.get(key)
        if before is not None:
            record_id, digest, payload, gone = before
            stored[key] = (record_id, digest)
            if not record.get(DELETED) and (gone or _supersedes(payload, record, version, True)):
                stale.add(index)
                continue
            if carry is not None and not record.get(DELETED) and isinstance(payload, dict):
                record = carry(record, payload)
        fresh.append(record)
        keys.append(key)
    page = prepare_page(Page(fresh, None, keys=keys), primary_key)
    changed = [r for r in page.records if (b := stored.get(r.key)) is None or b[1] != r.digest]
    write_changed(conn, job, changed, stored, [], utcnow())
    job.stats.read += len(records)
    job.stats.unchanged += len(records) - len(changed)
    metrics.page_committed(job.source, job.stream.name, len(records), 0)
    return stale


def _supersedes(
    new: dict[str, Any], old: dict[str, Any], version: str, strictly: bool = False
) -> bool:
    """Whether `new` replaces `old`: a delete always (unless `old` is one), else by `version`
    (later, or as late unless `strictly`); a version missing on either side: yes."""
    if old.get(DELETED):
        return bool(new.get(DELETED)) and not strictly
    if new.get(DELETED):
        return True
    after, before = _moment(new.get(version)), _moment(old.get(version))
    if after is None or before is None:
        return not strictly
    return after > before or (after == before and not strictly)


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def forget_cursors(engine: Engine, streams: list[tuple[str, str]]) -> None:
    """Drop the saved positions (cursor values, file fingerprints) of these (source, stream)
    pairs: their next read starts from scratch, as a first read. Stored records stay, so
    unchanged ones still cost only a hash comparison; a snapshot stream's complete read
    deletes what it no longer holds, as always."""
    c = CURSORS.c
    with engine.begin() as conn:
        for source, stream in streams:
            conn.execute(delete(CURSORS).where(c.source == source, c.stream == stream))


def _save_cursor(conn: Connection, source: str, stream: str, value: Any) -> None:
    row = {"source": source, "stream": stream, "value": value, "updated_at": utcnow()}
    insert_many(conn, CURSORS, [row], ["source", "stream"], ["value", "updated_at"])


def _write_page(
    conn: Connection, job: StreamIngest, page: PreparedPage, seen: set[str] | None
) -> None:
    stats = job.stats
    stats.read += page.read
    now = utcnow()
    error_rows = [error_row(job, where, f, None, why, now) for where, f, why in page.errors]
    if seen is not None:
        seen.update(r.key for r in page.records)
        seen.update(page.live_keys)
    stored = _stored_hashes(conn, job, [r.key for r in page.records])
    changed = [
        r for r in page.records if (before := stored.get(r.key)) is None or before[1] != r.digest
    ]
    stats.unchanged += len(page.records) - len(changed)
    write_changed(conn, job, changed, stored, error_rows, now)


def write_changed(
    conn: Connection,
    job: StreamIngest,
    changed: list[PreparedRecord],
    stored: dict[str, tuple[int, str]],
    error_rows: list[dict[str, Any]],
    now: Any,
) -> None:
    """Write new or changed records (transforming them first), replace their events and
    errors, and leave them pending for identity resolution. `stored` holds (id, content hash)
    of the keys already in the cache; `error_rows` are the page's own problems. Also the
    writer of `remap.py`, whose records changed by mapping rather than by content."""
    stats = job.stats
    new_ids = iter(allocate_ids(conn, RECORDS, sum(1 for r in changed if r.key not in stored)))
    when = datetime_binder(conn)
    written_at = when(now)
    source, stream, run_id = job.source, job.stream.name, job.run_id
    rows: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for record in changed:
        before = stored.get(record.key)
        record_id = before[0] if before else next(new_ids)
        transform(record, job.transformer)
        if record.errors:
            error_rows.extend(error_row(job, record.key, *e, now) for e in record.errors)
        row = (
            record_id, source, stream, record.key, record.payload, record.digest,
            record.attributes, record.identifiers, when(record.source_ts), record.deleted,
            True, written_at, run_id,
        )  # fmt: skip
        rows.append(row)
        if record.deleted:
            stats.deleted += 1
            continue
        if before is None:
            stats.inserted += 1
        else:
            stats.updated += 1
        if record.events:
            events.extend(
                (record_id, ordinal, None, event_type, when(occurred_at), properties)
                for ordinal, event_type, occurred_at, properties in record.events
            )
    if not rows and not error_rows:
        return
    insert_tuples(conn, RECORDS, _RECORD_COLUMNS, rows, _RECORD_KEY, _RECORD_UPDATE)
    journal.append(conn, journal.RECORD, [row[0] for row in rows])
    replaced = [stored[r.key][0] for r in changed if r.key in stored]
    for part in chunks(replaced):
        conn.execute(delete(EVENTS).where(EVENTS.c.record_id.in_(part)))
    stats.events += len(events)
    insert_tuples(conn, EVENTS, _EVENT_COLUMNS, events)
    replace_errors(conn, job, [r.key for r in changed if r.key in stored], error_rows)


def _stored_hashes(
    conn: Connection, job: StreamIngest, keys: list[str]
) -> dict[str, tuple[int, str]]:
    sql = (
        "SELECT external_id, id, content_hash FROM source_record "
        "WHERE source = ? AND stream = ? AND external_id IN ({in})"
    )
    rows = select_in(conn, sql, (job.source, job.stream.name), keys)
    return {external_id: (record_id, digest) for external_id, record_id, digest in rows}


def replace_errors(
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


def error_row(
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


def _delete_unseen(
    conn: Connection, job: StreamIngest, seen: set[str], started: datetime | None = None
) -> int:
    """For snapshot streams: records stored as live but absent from a complete read are deleted,
    unless written after the read `started` (by another writer: newer than what it saw)."""
    r = RECORDS.c
    query = select(r.id, r.external_id).where(
        r.source == job.source, r.stream == job.stream.name, r.deleted.is_(False)
    )
    if started is not None:
        query = query.where(or_(r.updated_at.is_(None), r.updated_at < started))
    live = conn.execute(query).all()
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
    journal.append(conn, journal.RECORD, gone)
    return len(gone)


__all__ = [
    "StreamIngest",
    "StreamStats",
    "StreamsFailed",
    "error_row",
    "forget_cursors",
    "ingest_stream",
    "ingest_streams",
    "load_cursor",
    "replace_errors",
    "write_changed",
    "write_unless_stale",
]
