"""`run --full-refresh`: named streams forget their saved position and are read from scratch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncbridge.config.loader import Settings, StreamKey
from syncbridge.errors import FatalError
from syncbridge.pipeline import run_cycle, select_streams
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import SourceRecord

from .builders import (
    salesforce_row,
    settings_from,
    shopify_row,
    two_source_config,
    write_salesforce_report,
    write_shopify_customers,
)

R = SourceRecord.__table__.c
CONTACTS = StreamKey("crm", "contacts")
CUSTOMERS = StreamKey("shop", "customers")
ZOE = salesforce_row("0035g00000AbCdEAAV", "zoe.muller@gmail.com", "Zoë", "Müller",
                     **{"Last Modified Date": "10/3/2026 9:05 AM"})  # fmt: skip
BOB = salesforce_row("0035g00000AbCdFAAV", "bob.stone@gmail.com", "Bob", "Stone")


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> Iterator[tuple[Settings, Engine]]:
    write_salesforce_report(tmp_path / "crm" / "contacts.csv", [ZOE, BOB])
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [
            shopify_row("7391094784034", "zoe.muller@gmail.com", "Zoe", "Mueller"),
            shopify_row("7391094784035", "ann.lee@yahoo.com", "Ann", "Lee"),
        ],
    )
    engine = open_engine(store_url)
    yield settings_from(two_source_config(tmp_path, store_url), tmp_path), engine
    engine.dispose()


def records(engine: Engine, source: str) -> dict[str, tuple[bool, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(R.external_id, R.deleted, R.attributes).where(R.source == source)
        ).all()
    return {key: (deleted, attributes.get("first_name")) for key, deleted, attributes in rows}


def test_full_refresh_rereads_a_file_whose_fingerprint_is_unchanged(
    project: tuple[Settings, Engine],
) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    assert run_cycle(settings, engine).totals.read == 0  # unchanged files are skipped
    report = run_cycle(settings, engine, full_refresh=[CUSTOMERS])
    assert report.streams["shop/customers"].read == 2
    assert report.streams["shop/customers"].unchanged == 2  # re-read, nothing rewritten
    assert report.streams["crm/contacts"].read == 0  # not named: still incremental
    assert run_cycle(settings, engine).totals.read == 0  # the refresh saved a new position


def test_full_refresh_reads_rows_older_than_the_saved_cursor(
    project: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    # Bob edited without his Last Modified Date moving: older than the cursor (Zoe's).
    edited = {**BOB, "First Name": "Robert"}
    write_salesforce_report(tmp_path / "crm" / "contacts.csv", [ZOE, edited])
    skipped = run_cycle(settings, engine).streams["crm/contacts"]
    assert (skipped.read, skipped.updated) == (1, 0)  # only Zoe, at the cursor, is read
    report = run_cycle(settings, engine, full_refresh=[CONTACTS])
    assert (report.streams["crm/contacts"].read, report.streams["crm/contacts"].updated) == (2, 1)
    assert records(engine, "crm")["0035g00000AbCdFAAV"] == (False, "Robert")


def test_full_refresh_keeps_the_records_of_a_stream_that_is_no_snapshot(
    project: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, engine = project
    run_cycle(settings, engine)
    write_salesforce_report(tmp_path / "crm" / "contacts.csv", [ZOE])
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [shopify_row("7391094784034", "zoe.muller@gmail.com", "Zoe", "Mueller")],
    )
    report = run_cycle(settings, engine, full_refresh=select_streams(settings, []))
    assert report.streams["crm/contacts"].deleted == 0
    assert records(engine, "crm")["0035g00000AbCdFAAV"] == (False, "Bob")
    assert report.streams["shop/customers"].deleted == 1  # a snapshot deletes as always
    assert records(engine, "shop")["'7391094784035"][0] is True


def test_select_streams_takes_sources_and_streams_and_refuses_unknown_names(
    project: tuple[Settings, Engine],
) -> None:
    settings, _ = project
    assert select_streams(settings, []) == [CONTACTS, CUSTOMERS]
    assert select_streams(settings, ["shop"]) == [CUSTOMERS]
    assert select_streams(settings, ["crm/contacts", "crm"]) == [CONTACTS]
    with pytest.raises(FatalError, match=r"no enabled source or stream 'crm/contact'.*"
                       r"did you mean 'crm/contacts'\?"):  # fmt: skip
        select_streams(settings, ["crm/contact"])
    with pytest.raises(FatalError, match=r"'shp'.*did you mean 'shop'\?.*crm/contacts"):
        select_streams(settings, ["shp"])
