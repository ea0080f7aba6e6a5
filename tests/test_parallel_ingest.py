"""The producer process: same cache as a serial read, and its failures reach the caller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncbridge.connectors import Page, Stream
from syncbridge.errors import FatalError
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Event, RecordErrorRow, SourceRecord
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
