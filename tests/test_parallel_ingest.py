"""Producer processes: same cache as a serial read, several streams at once, and their
failures reach the caller."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncbridge.connectors import Page, Stream
from syncbridge.errors import FatalError
from syncbridge.ingest import StreamIngest, ingest_stream, ingest_streams
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Event, RecordErrorRow, SourceRecord, StreamCursor
from syncbridge.transform import RecordTransformer

from .streams import PERSON_MAPPING, ListStream

PEOPLE = [
    {"id": f"r{i}", "crm_id": f"c{i}", "email": f"Person{i}@Gmail.com " if i % 7 else "bad at x",
     "first_name": "Zoë", "city": "Köln", "updated": "2026-11-20T10:00:00Z" if i % 5 else "soon"}
    for i in range(1200)
]  # fmt: skip


def snapshot(engine: Engine) -> tuple[list[Any], list[Any], list[Any]]:
    r, e = SourceRecord.__table__.c, RecordErrorRow.__table__.c
    with engine.connect() as conn:
        records = conn.execute(
            select(
                r.external_id, r.content_hash, r.attributes, r.identifiers, r.source_ts
            ).order_by(r.external_id)
        ).all()
        errors = conn.execute(
            select(e.external_id, e.field, e.value, e.message).order_by(e.external_id, e.field)
        ).all()
        events = conn.execute(select(Event.__table__.c.type)).all()
    return records, errors, events


def load(url: str, parallel: bool, stream: Stream) -> Engine:
    engine = open_engine(url)
    job = StreamIngest("crm", stream, RecordTransformer(PERSON_MAPPING, "US"), parallel=parallel)
    stats = ingest_stream(engine, job)
    assert stats.read == len(PEOPLE)
    return engine


def test_producer_process_writes_what_a_serial_read_writes(tmp_path: Path) -> None:
    serial = load(f"sqlite:///{tmp_path / 'serial.db'}", False, ListStream("people", PEOPLE, 250))
    parallel = load(f"sqlite:///{tmp_path / 'par.db'}", True, ListStream("people", PEOPLE, 250))
    assert snapshot(parallel) == snapshot(serial)
    assert len(snapshot(parallel)[1]) > 0  # the bad emails and dates were recorded as errors


class FailingStream(ListStream):
    def read(self, cursor: Any | None) -> Iterator[Page]:
        yield from list(super().read(cursor))[:1]
        raise OSError("disk vanished while reading people.csv")


def test_producer_failure_stops_the_read_with_its_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fail.db'}"
    with pytest.raises(FatalError, match="crm/people: OSError: disk vanished"):
        load(url, True, FailingStream("people", PEOPLE, 250))
    engine = open_engine(url)
    with engine.connect() as conn:  # the page before the failure was committed, nothing else
        assert len(conn.execute(select(SourceRecord.__table__.c.id)).all()) == 250


class SnapshotStream(ListStream):
    """A full export: a complete read deletes what it no longer lists."""

    snapshot = True

    def read(self, cursor: Any | None) -> Iterator[Page]:
        pages = list(super().read(cursor))
        for number, page in enumerate(pages, start=1):
            yield Page(page.records, {"page": number}, complete=number == len(pages))


def three_streams(records: list[dict[str, Any]]) -> list[Stream]:
    return [
        ListStream("contacts", records[:500], 120),
        SnapshotStream("customers", records[400:1000], 90),
        ListStream("leads", records[900:], 200),
    ]


def load_all(url: str, streams: list[Stream], parallel: bool, workers: int) -> Engine:
    engine = open_engine(url)
    transformer = RecordTransformer(PERSON_MAPPING, "US")
    jobs = [StreamIngest("crm", s, transformer, parallel=parallel) for s in streams]
    stats = ingest_streams(engine, jobs, workers)
    assert [s.read for s in stats] == [500, 600, 300]
    return engine


def test_concurrent_streams_write_what_one_at_a_time_writes(tmp_path: Path) -> None:
    serial = load_all(f"sqlite:///{tmp_path / 's.db'}", three_streams(PEOPLE), False, 1)
    concurrent = load_all(f"sqlite:///{tmp_path / 'c.db'}", three_streams(PEOPLE), True, 2)
    assert snapshot(concurrent) == snapshot(serial)
    with concurrent.connect() as conn:  # each stream's cursor is its own last page
        cursors = dict(conn.execute(select(StreamCursor.stream, StreamCursor.value)).all())
    assert cursors == {"customers": {"page": 7}}


def test_a_concurrent_snapshot_still_deletes_what_its_export_dropped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'snap.db'}"
    load_all(url, three_streams(PEOPLE), True, 2)
    engine = open_engine(url)
    with engine.begin() as conn:  # a later full export without its last 50 people
        conn.execute(StreamCursor.__table__.delete())
    fewer = [*three_streams(PEOPLE)]
    fewer[1] = SnapshotStream("customers", PEOPLE[400:950], 90)
    jobs = [StreamIngest("crm", s, RecordTransformer(PERSON_MAPPING, "US"), parallel=True)
            for s in fewer]  # fmt: skip
    stats = ingest_streams(engine, jobs, 2)
    assert stats[1].deleted == 50
    r = SourceRecord.__table__.c
    with engine.connect() as conn:
        gone = conn.execute(select(r.external_id).where(r.deleted.is_(True))).scalars().all()
    assert sorted(gone) == sorted(p["id"] for p in PEOPLE[950:1000])


class DyingStream(ListStream):
    def read(self, cursor: Any | None) -> Iterator[Page]:
        yield from list(super().read(cursor))[:1]
        os._exit(3)  # killed: no exception, no end marker


def test_a_producer_that_dies_is_named_and_the_others_stop(tmp_path: Path) -> None:
    streams = [ListStream("contacts", PEOPLE[:600], 100), DyingStream("leads", PEOPLE[600:], 100)]
    engine = open_engine(f"sqlite:///{tmp_path / 'dead.db'}")
    jobs = [StreamIngest("crm", s, RecordTransformer(PERSON_MAPPING, "US"), parallel=True)
            for s in streams]  # fmt: skip
    with pytest.raises(FatalError, match=r"crm/leads: the reader process died \(exit code 3\)"):
        ingest_streams(engine, jobs, 2)
    assert not multiprocessing.active_children()  # no producer left behind
