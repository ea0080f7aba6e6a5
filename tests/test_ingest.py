"""Ingestion through the file connector: idempotence, cursors, deletes, bad input kept apart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from syncbridge.pipeline import run_cycle
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Profile, RecordErrorRow, SourceRecord, StreamCursor

from .builders import (
    salesforce_row,
    settings_from,
    shopify_row,
    two_source_config,
    write_jsonl,
    write_salesforce_report,
    write_shopify_customers,
)
from .streams import PERSON_MAPPING, ListStream, journal_head, journaled

R = SourceRecord.__table__.c
P = Profile.__table__.c
DATA_TABLES = (
    "source_record",
    "identity",
    "profile",
    "event",
    "stream_cursor",
    "record_error",
    "profile_merge",
    "cache_setting",
)


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> tuple[Any, Engine]:
    write_salesforce_report(
        tmp_path / "crm" / "contacts.csv",
        [
            salesforce_row(
                "0035g00000AbCdEAAV",
                "Zoe.Muller@Gmail.com ",
                "Zoë",
                "Müller",
                **{"Mailing Country": "Deutschland", "Phone": "(415) 555-0132"},
            ),
            salesforce_row(
                "0035g00000AbCdFAAV",
                "bob at gmail.com",
                "Bob",
                "Stone",
                **{"Mailing Country": "Atlantis", "Last Modified Date": "10/3/2026 9:05 AM"},
            ),
        ],
    )
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [
            shopify_row(
                "7391094784034",
                "zoe.muller@gmail.com",
                "Zoe",
                "Mueller",
                **{"Total Spent": "1234.50"},
            ),
            shopify_row(
                "7391094784035", "ann.lee@yahoo.com", "Ann", "Lee", **{"Total Spent": "1.234,50"}
            ),
        ],
    )
    settings = settings_from(two_source_config(tmp_path, store_url), tmp_path)
    engine = open_engine(store_url)
    yield settings, engine
    engine.dispose()


class WriteCounter:
    """Counts INSERT/UPDATE/DELETE statements that reach data tables (not the run log)."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statement = statement.replace('"', "")
        head = statement.lstrip().split(None, 3)
        verb = head[0].upper() if head else ""
        if verb in ("INSERT", "UPDATE", "DELETE") and any(
            f" {t} " in f" {statement} " or f" {t}\n" in statement for t in DATA_TABLES
        ):
            self.statements.append(statement.split("\n")[0][:80])


def test_first_run_loads_resolves_and_records_errors(project: tuple[Any, Engine]) -> None:
    settings, engine = project
    report = run_cycle(settings, engine)
    totals = report.totals
    assert (totals.read, totals.inserted, totals.errors) == (4, 4, 3)
    assert report.resolve.profiles_created == 3  # Zoë merged across CRM and shop
    with engine.connect() as conn:
        errors = {
            (e.stream, e.field, e.value) for e in conn.execute(select(RecordErrorRow.__table__))
        }
        bob = conn.execute(
            select(R.attributes).where(R.external_id == "0035g00000AbCdFAAV")
        ).scalar_one()
        ann = conn.execute(
            select(R.attributes).where(R.external_id == "'7391094784035")
        ).scalar_one()
    assert errors == {
        ("contacts", "Mailing Country", "Atlantis"),
        ("contacts", "Email", "bob at gmail.com"),
        ("customers", "Total Spent", "1.234,50"),
    }
    assert bob["first_name"] == "Bob" and "country" not in bob  # the rest of the record loaded
    assert ann["last_name"] == "Lee" and "shop_total_spent" not in ann


def test_second_run_on_unchanged_files_writes_nothing_and_dirties_nothing(
    project: tuple[Any, Engine],
) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    with engine.begin() as conn:
        conn.execute(update(Profile.__table__).values(dirty=False))
    head = journal_head(engine)
    counter = WriteCounter(engine)
    report = run_cycle(settings, engine)
    assert counter.statements == []
    assert report.totals.read == 0
    assert journal_head(engine) == head  # nothing journaled: nothing for any later stage
    with engine.connect() as conn:
        assert conn.execute(select(P.id).where(P.dirty)).all() == []


def test_rewritten_but_identical_file_costs_hash_checks_only(
    project: tuple[Any, Engine], tmp_path: Path
) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    path = tmp_path / "shop" / "customers.csv"
    path.write_bytes(path.read_bytes())  # new mtime, same content
    counter = WriteCounter(engine)
    report = run_cycle(settings, engine)
    assert report.totals.read == 2 and report.totals.unchanged == 2
    assert [s for s in counter.statements if "stream_cursor" not in s] == []


def test_changed_row_updates_only_its_profile(project: tuple[Any, Engine], tmp_path: Path) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    head = journal_head(engine)
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [
            shopify_row(
                "7391094784034",
                "zoe.muller@gmail.com",
                "Zoe",
                "Mueller",
                **{"Total Spent": "1300.00"},
            ),
            shopify_row(
                "7391094784035", "ann.lee@yahoo.com", "Ann", "Lee", **{"Total Spent": "1.234,50"}
            ),
        ],
    )
    report = run_cycle(settings, engine)
    assert report.streams["shop/customers"].updated == 1
    changed = journaled(engine, "profile", since=head)
    with engine.connect() as conn:
        dirty = conn.execute(select(P.email, P.attributes).where(P.id.in_(changed))).all()
    assert [(email, attrs["shop_total_spent"]) for email, attrs in dirty] == [
        ("zoe.muller@gmail.com", 1300.0)
    ]


def test_snapshot_stream_deletes_rows_missing_from_the_new_export(
    project: tuple[Any, Engine], tmp_path: Path
) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [
            shopify_row(
                "7391094784034",
                "zoe.muller@gmail.com",
                "Zoe",
                "Mueller",
                **{"Total Spent": "1234.50"},
            ),
        ],
    )
    report = run_cycle(settings, engine)
    assert report.streams["shop/customers"].deleted == 1
    assert report.resolve.profiles_deleted == 1
    with engine.connect() as conn:
        ann = conn.execute(select(P.deleted).where(P.email == "ann.lee@yahoo.com")).scalar_one()
    assert ann is True


def test_empty_snapshot_export_deletes_nothing(project: tuple[Any, Engine], tmp_path: Path) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    write_shopify_customers(tmp_path / "shop" / "customers.csv", [])
    report = run_cycle(settings, engine)
    assert report.streams["shop/customers"].deleted == 0


def test_cursor_skips_rows_older_than_the_saved_position(
    project: tuple[Any, Engine], tmp_path: Path
) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    with engine.connect() as conn:
        saved = conn.execute(
            select(StreamCursor.__table__.c.value).where(
                StreamCursor.__table__.c.stream == "contacts"
            )
        ).scalar_one()
    assert saved["mark"] == "2026-10-03T16:05:00Z"
    write_salesforce_report(
        tmp_path / "crm" / "contacts.csv",
        [
            # edited without bumping Last Modified Date: older than the cursor, so not read
            salesforce_row("0035g00000AbCdEAAV", "zoe.muller@gmail.com", "Zoe-Edited", "Müller"),
            salesforce_row(
                "0035g00000AbCdFAAV",
                "bob.stone@gmail.com",
                "Bob",
                "Stone",
                **{"Last Modified Date": "11/20/2026 10:00 AM"},
            ),
        ],
    )
    report = run_cycle(settings, engine)
    assert report.streams["crm/contacts"].read == 1
    assert report.streams["crm/contacts"].updated == 1


def test_salesforce_footer_is_not_read_as_records(project: tuple[Any, Engine]) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    with engine.connect() as conn:
        keys = conn.execute(select(R.external_id).where(R.stream == "contacts")).scalars().all()
        errors = conn.execute(select(RecordErrorRow.__table__.c.message)).scalars().all()
    assert sorted(keys) == ["0035g00000AbCdEAAV", "0035g00000AbCdFAAV"]
    assert "record has no primary key value" not in errors


def test_malformed_jsonl_lines_are_errors_and_the_rest_loads(
    tmp_path: Path, store_url: str
) -> None:
    path = write_jsonl(
        tmp_path / "web" / "events.jsonl",
        [
            {
                "messageId": "m1",
                "type": "identify",
                "userId": "7391094784034",
                "traits": {"email": "zoe@gmail.com"},
                "timestamp": "2026-11-20T10:00:00Z",
            },
        ],
    )
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"messageId": "m2", "type": "track", \n')
        fh.write('["not", "an", "object"]\n')
        fh.write(
            '{"type": "track", "event": "Product Viewed", "timestamp": "2026-11-20T10:00:00Z"}\n'
        )
    (tmp_path / "web.toml").write_text(
        '[identifiers]\nemail = "traits.email"\nexternal = { "shopify:customer" = "userId" }\n',
        encoding="utf-8",
    )
    data = {
        "store": {"url": store_url},
        "sources": [
            {
                "name": "web",
                "connector": "files",
                "streams": [
                    {
                        "name": "events",
                        "path": "web",
                        "primary_key": "messageId",
                        "mapping": "web.toml",
                    }
                ],
            }
        ],
    }
    engine = open_engine(store_url)
    report = run_cycle(settings_from(data, tmp_path), engine)
    assert report.totals.inserted == 1
    with engine.connect() as conn:
        errors = sorted(
            ((e.external_id, e.message) for e in conn.execute(select(RecordErrorRow.__table__))),
            key=str,
        )
    assert errors == [
        ("events.jsonl line 2", "invalid JSON: Expecting property name enclosed in double quotes"),
        ("events.jsonl line 3", "a line must hold a JSON object"),
        ("events.jsonl line 4", "record has no primary key value (messageId)"),
    ]
    engine.dispose()


def test_crash_mid_stream_repeats_the_page_and_loses_nothing(
    tmp_path: Path, store_url: str
) -> None:
    rows = [shopify_row(str(7391094784000 + i), f"person{i}@gmail.com") for i in range(25)]
    write_shopify_customers(tmp_path / "shop" / "customers.csv", rows)
    data = two_source_config(tmp_path, store_url)
    data["sources"] = data["sources"][1:]
    data["sources"][0]["streams"][0]["page_size"] = 10
    data["identity"] = {}
    settings = settings_from(data, tmp_path)
    engine = open_engine(store_url)
    pages = 0

    def crash_on_third_page(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal pages
        if statement.replace('"', "").lstrip().upper().startswith("INSERT INTO SOURCE_RECORD"):
            pages += 1
            if pages == 3:
                raise RuntimeError("power cut")

    event.listen(engine, "before_cursor_execute", crash_on_third_page)
    with pytest.raises(RuntimeError, match="power cut"):
        run_cycle(settings, engine)
    event.remove(engine, "before_cursor_execute", crash_on_third_page)
    with engine.connect() as conn:
        assert conn.execute(select(R.id)).all().__len__() == 20
        assert conn.execute(select(StreamCursor.__table__)).all() == []  # file not finished
    report = run_cycle(settings, engine)
    assert (report.totals.inserted, report.totals.unchanged) == (5, 20)
    with engine.connect() as conn:
        assert len(conn.execute(select(P.id).where(P.deleted.is_(False))).all()) == 25
    engine.dispose()


# -- bad files: reported, never lost silently (issue 11, points 1-4) ---------------------------


def test_a_failing_stream_does_not_hold_back_the_others(
    project: tuple[Any, Engine], tmp_path: Path
) -> None:
    """The CRM export (read first) is not UTF-8: the run fails, naming the line, but the shop's
    customers are still read and resolved into profiles."""
    from syncbridge.errors import FatalError
    from syncbridge.store.tables import Run

    settings, engine = project
    path = tmp_path / "crm" / "contacts.csv"
    path.write_bytes(path.read_bytes().replace("Zoë".encode(), b"Zo\xeb"))
    with pytest.raises(FatalError) as info:
        run_cycle(settings, engine)
    with engine.connect() as conn:
        emails = conn.execute(select(P.email).where(P.deleted.is_(False))).scalars().all()
        run = conn.execute(select(Run.__table__.c.status, Run.__table__.c.message)).one()
    assert sorted(emails) == ["ann.lee@yahoo.com", "zoe.muller@gmail.com"]
    assert run.status == "failed" and "contacts.csv: line 2" in run.message
    assert re.search(r"contacts.csv: line 2, byte offset \d+: byte 0xEB", str(info.value))


def test_a_repeated_key_across_pages_keeps_the_later_row_and_reports_both_lines(
    tmp_path: Path, store_url: str
) -> None:
    rows = [shopify_row("7391094784034", "old@gmail.com"), shopify_row("7391094784035", "b@x.io"),
            shopify_row("7391094784034", "new@gmail.com")]  # fmt: skip
    write_shopify_customers(tmp_path / "shop" / "customers.csv", rows)
    data = two_source_config(tmp_path, store_url)
    data["sources"] = data["sources"][1:]
    data["sources"][0]["streams"][0]["page_size"] = 1  # the repeat lands in another page
    data["identity"] = {}
    engine = open_engine(store_url)
    run_cycle(settings_from(data, tmp_path), engine)
    with engine.connect() as conn:
        emails = conn.execute(select(P.email).where(P.deleted.is_(False))).scalars().all()
        errors = conn.execute(
            select(RecordErrorRow.__table__.c.external_id, RecordErrorRow.__table__.c.message)
        ).all()
    engine.dispose()
    assert sorted(emails) == ["b@x.io", "new@gmail.com"]
    assert [tuple(e) for e in errors] == [("customers.csv line 2", "primary key "
            "\"'7391094784034\" appears again at customers.csv line 4; that later row is kept, "
            "this one is not")]  # fmt: skip


class _BackwardStream(ListStream):
    """Pages whose cursors go 10:00, then 09:00: a connector bug the engine must not save."""

    def position(self, cursor: Any | None) -> Any:
        from syncbridge.cleaning import parse_datetime

        return parse_datetime(cursor) if cursor else None

    def read(self, cursor: Any | None) -> Any:
        from syncbridge.connectors import Page

        yield Page([{"id": "1", "email": "a@x.io"}], "2026-11-20T10:00:00Z")
        yield Page([{"id": "2", "email": "b@x.io"}], "2026-11-20T09:00:00Z")


def test_the_engine_never_moves_a_cursor_back(engine: Engine) -> None:
    from syncbridge.ingest import StreamIngest, ingest_stream, load_cursor
    from syncbridge.transform import RecordTransformer

    stream = _BackwardStream("people", [])
    stats = ingest_stream(engine, StreamIngest("src", stream, RecordTransformer(PERSON_MAPPING)))
    assert stats.inserted == 2  # the records of the page are stored all the same
    assert load_cursor(engine, "src", "people") == "2026-11-20T10:00:00Z"


def test_a_read_abandoned_by_an_error_is_closed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connector's read ends (its cursor and transaction closed, a bus's page handed back)
    as soon as the writing fails, not when the collector finds the generator: while the
    error is held (as a caller or a test holds it), the read is already closed."""
    from collections.abc import Iterator

    from syncbridge import ingest as ingest_module
    from syncbridge.connectors import Page
    from syncbridge.ingest import StreamIngest
    from syncbridge.transform import RecordTransformer

    from .streams import PERSON_MAPPING, ListStream

    closed: list[str] = []

    class HoldingStream(ListStream):
        def read(self, cursor: Any | None) -> Iterator[Page]:
            try:
                yield from super().read(cursor)
            finally:
                closed.append("closed")

    writes = 0
    write = ingest_module._StreamWriter.write

    def failing(writer: Any, page: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise RuntimeError("disk full")
        write(writer, page)

    monkeypatch.setattr(ingest_module._StreamWriter, "write", failing)
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    records = [{"id": str(i), "email": f"p{i}@gmail.com"} for i in range(30)]
    job = StreamIngest("crm", HoldingStream("contacts", records, 10),
                       RecordTransformer(PERSON_MAPPING, "US"))  # fmt: skip
    with pytest.raises(RuntimeError, match="disk full") as held:
        ingest_module.ingest_stream(engine, job)
    assert held.value is not None and closed == ["closed"]
    engine.dispose()


def test_a_complete_read_does_not_delete_what_another_writer_stored_while_it_ran(
    engine: Engine,
) -> None:
    """A snapshot read lists what was live when it read; a record another writer (a webhook,
    the intake) stored meanwhile is newer than that list, so the complete page spares it."""
    from collections.abc import Iterator

    from syncbridge.connectors import Page, Stream
    from syncbridge.ingest import StreamIngest, append_records, ingest_stream
    from syncbridge.transform import RecordTransformer

    def person(i: int) -> dict[str, Any]:
        return {"id": f"c{i}", "email": f"p{i}@gmail.com", "first_name": f"P{i}"}

    class Snapshot(Stream):
        name, primary_key, snapshot = "contacts", ("id",), True

        def __init__(self, ids: list[int], meanwhile: Any = None) -> None:
            self.ids, self.meanwhile = ids, meanwhile

        def read(self, cursor: Any | None) -> Iterator[Page]:
            yield Page([person(i) for i in self.ids], None)
            if self.meanwhile is not None:
                self.meanwhile()
            yield Page([], None, complete=True)

    def job(stream: Stream) -> StreamIngest:
        return StreamIngest("crm", stream, RecordTransformer(PERSON_MAPPING, "US"))

    ingest_stream(engine, job(Snapshot([1, 2])))
    webhook = job(Snapshot([]))
    stats = ingest_stream(
        engine, job(Snapshot([1], meanwhile=lambda: append_records(engine, webhook, [person(3)])))
    )
    r = SourceRecord.__table__.c
    with engine.connect() as conn:
        rows = dict(conn.execute(select(r.external_id, r.deleted)).all())
    assert rows == {"c1": False, "c2": True, "c3": False}  # c2 is gone, c3 arrived meanwhile
    assert stats.deleted == 1
