"""A changed mapping takes effect: stored records are re-mapped without reading the source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from syncbridge_connectors.files import FileStream

from syncbridge import remap
from syncbridge.config.loader import Settings
from syncbridge.pipeline import run_cycle
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Change, Event, Profile, RecordErrorRow, SourceRecord

from .builders import (
    CRM_MAPPING,
    SHOP_MAPPING,
    salesforce_row,
    settings_from,
    shopify_row,
    two_source_config,
    write_jsonl,
    write_salesforce_report,
    write_shopify_customers,
)
from .test_ingest import WriteCounter

R = SourceRecord.__table__.c
P = Profile.__table__.c
E = Event.__table__.c
ERR = RecordErrorRow.__table__.c
Project = tuple[dict[str, Any], Engine]


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> Iterator[Project]:
    write_salesforce_report(
        tmp_path / "crm" / "contacts.csv",
        [
            salesforce_row("0035g00000AbCdEAAV", "zoe.muller@gmail.com", "Zoë", "Müller",
                           Title="VP Sales", **{"Lead Source": "12"}),
            salesforce_row("0035g00000AbCdFAAV", "bob at gmail.com", "Bob", "Stone",
                           Title="Buyer", **{"Mailing Country": "Atlantis", "Lead Source": "Web"}),
            salesforce_row("0035g00000AbCdGAAV", "ann.lee@yahoo.com", "Ann", "Lee",
                           Title="CTO", **{"Lead Source": "7"}),
        ],
    )  # fmt: skip
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [
            shopify_row("7391094784034", "zoe.muller@gmail.com", "Zoe", "Mueller"),
            shopify_row("7391094784035", "ann.lee@yahoo.com", "Ann", "Lee"),
        ],
    )
    engine = open_engine(store_url)
    yield two_source_config(tmp_path, store_url), engine
    engine.dispose()


def with_mappings(
    data: dict[str, Any], tmp_path: Path, crm: str | None = None, shop: str | None = None
) -> Settings:
    if crm is not None:
        (tmp_path / "crm.toml").write_text(crm, encoding="utf-8")
    if shop is not None:
        (tmp_path / "shop.toml").write_text(shop, encoding="utf-8")
    return settings_from(data, tmp_path)


def forbid_file_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, opening an export for its rows fails the test."""

    def refuse(self: FileStream, path: Path, errors: Any) -> Iterator[dict[str, Any]]:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(FileStream, "_rows", refuse)


def settle(engine: Engine) -> None:
    """As after a push: nothing is waiting for the rules or Mailchimp (the journal is empty)."""
    with engine.begin() as conn:
        conn.execute(update(Profile.__table__).values(dirty=False))
        conn.execute(Change.__table__.delete())


def live_profiles(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(P.email, P.attributes).where(P.deleted.is_(False))).all()
    return {email: attributes for email, attributes in rows}


def pushed(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        changed = select(Change.__table__.c.subject).where(Change.__table__.c.kind == "profile")
        return sorted(conn.execute(select(P.email).where(P.id.in_(changed))).scalars())


NOT_A_COUNTRY = "not a known country name or ISO 3166 code"
NOT_A_NUMBER = "not a locale-free number (expected digits with an optional '.')"


def crm_attributes(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(R.external_id, R.attributes).where(R.source == "crm")).all()
    return {key: attributes for key, attributes in rows}


def record_errors(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(select(ERR.external_id, ERR.field, ERR.value, ERR.message)).all()
    return sorted((tuple(r) for r in rows), key=str)


def test_added_attribute_reaches_every_profile_without_reading_the_file_again(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, engine = project
    run_cycle(with_mappings(data, tmp_path), engine)
    settle(engine)
    forbid_file_reads(monkeypatch)
    report = run_cycle(with_mappings(data, tmp_path, crm=CRM_MAPPING + 'title = "Title"\n'), engine)
    assert report.totals.read == 0
    assert report.remaps["crm/contacts"].as_dict() == {
        "remapped": 3, "changed": 3, "events": 0, "errors": 2,
    }  # fmt: skip
    assert "shop/customers" not in report.remaps  # its mapping did not change
    titles = {email: attrs.get("title") for email, attrs in live_profiles(engine).items()}
    assert titles == {
        "zoe.muller@gmail.com": "VP Sales",
        "bob at gmail.com": "Buyer",
        "ann.lee@yahoo.com": "CTO",
    }
    assert pushed(engine) == sorted(titles)  # the push hears of it


def test_a_cache_from_before_fingerprints_applies_an_earlier_edit_once(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user edited a mapping before upgrading to a syncbridge that fingerprints mappings:
    the first run after the upgrade re-maps the stored records (once) and the edit lands."""
    from syncbridge.remap import FINGERPRINTS_KEY
    from syncbridge.store.tables import CacheSetting

    data, engine = project
    run_cycle(with_mappings(data, tmp_path), engine)
    settle(engine)
    with engine.begin() as conn:  # as a cache written before this release
        S = CacheSetting.__table__
        conn.execute(S.delete().where(S.c.key == FINGERPRINTS_KEY))
    forbid_file_reads(monkeypatch)
    report = run_cycle(with_mappings(data, tmp_path, crm=CRM_MAPPING + 'title = "Title"\n'), engine)
    assert report.remaps["crm/contacts"].changed == 3
    assert (
        report.remaps.get("shop/customers") is None or report.remaps["shop/customers"].changed == 0
    )
    assert live_profiles(engine)["ann.lee@yahoo.com"]["title"] == "CTO"
    again = run_cycle(with_mappings(data, tmp_path, crm=CRM_MAPPING + 'title = "Title"\n'), engine)
    assert again.remaps == {}


def test_second_run_after_a_remap_writes_nothing(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, engine = project
    run_cycle(with_mappings(data, tmp_path), engine)
    edited = with_mappings(data, tmp_path, crm=CRM_MAPPING + 'title = "Title"\n')
    run_cycle(edited, engine)
    settle(engine)
    forbid_file_reads(monkeypatch)
    counter = WriteCounter(engine)
    report = run_cycle(edited, engine)
    assert report.remaps == {}
    assert counter.statements == []
    assert pushed(engine) == []


def test_edit_that_changes_no_output_rewrites_no_record(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, engine = project
    run_cycle(with_mappings(data, tmp_path), engine)
    settle(engine)
    forbid_file_reads(monkeypatch)
    # The same attribute under a different spelling of the same spec: a different mapping text.
    same = CRM_MAPPING.replace('city = "Mailing City"', 'city = { field = ["Mailing City"] }')
    report = run_cycle(with_mappings(data, tmp_path, crm=same), engine)
    assert report.remaps["crm/contacts"].as_dict() == {
        "remapped": 3, "changed": 0, "events": 0, "errors": 0,
    }  # fmt: skip
    assert report.resolve.records == 0
    assert pushed(engine) == []


def test_first_run_stores_the_mapping_without_a_remap(project: Project, tmp_path: Path) -> None:
    data, engine = project
    report = run_cycle(with_mappings(data, tmp_path), engine)
    assert report.remaps == {}
    assert report.totals.inserted == 5


def test_mapping_that_fails_some_records_keeps_their_errors_and_loads_the_rest(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, engine = project
    run_cycle(with_mappings(data, tmp_path), engine)
    before = record_errors(engine)
    assert [e for e in before if e[0] == "0035g00000AbCdFAAV"] == [
        ("0035g00000AbCdFAAV", "Email", "bob at gmail.com", "not a valid email address"),
        ("0035g00000AbCdFAAV", "Mailing Country", "Atlantis", NOT_A_COUNTRY),
    ]
    forbid_file_reads(monkeypatch)
    # Lead Source as a number: "Web" cannot be one. Country is no longer mapped at all.
    crm = CRM_MAPPING.replace(
        'country = { field = "Mailing Country", type = "country" }',
        'lead_score = { field = "Lead Source", type = "integer" }',
    )
    report = run_cycle(with_mappings(data, tmp_path, crm=crm), engine)
    assert report.remaps["crm/contacts"].errors == 2
    errors = record_errors(engine)
    assert [e for e in errors if e[0] == "0035g00000AbCdFAAV"] == [
        ("0035g00000AbCdFAAV", "Email", "bob at gmail.com", "not a valid email address"),
        ("0035g00000AbCdFAAV", "Lead Source", "Web", NOT_A_NUMBER),
    ]  # the Atlantis error went with the country mapping; nothing is repeated
    assert len(errors) == len(before)
    scores = {email: attrs.get("lead_score") for email, attrs in live_profiles(engine).items()}
    assert scores == {"zoe.muller@gmail.com": 12, "bob at gmail.com": None, "ann.lee@yahoo.com": 7}
    assert all("country" not in attrs for attrs in crm_attributes(engine).values())


def test_remap_pages_through_a_stream_and_misses_no_record(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, engine = project
    rows = [
        shopify_row(str(7391094784000 + i), f"person{i}@gmail.com", f"P{i}", "X",
                    **{"Total Orders": str(i)})
        for i in range(250)
    ]  # fmt: skip
    write_shopify_customers(tmp_path / "shop" / "customers.csv", rows)
    run_cycle(with_mappings(data, tmp_path), engine)
    monkeypatch.setattr(remap, "PAGE_SIZE", 210)  # a bulk page (COPY on PostgreSQL), then 40
    forbid_file_reads(monkeypatch)
    shop = SHOP_MAPPING + 'orders = { field = "Total Orders", type = "integer" }\n'
    report = run_cycle(with_mappings(data, tmp_path, shop=shop), engine)
    stats = report.remaps["shop/customers"]
    assert (stats.remapped, stats.changed) == (250, 250)
    orders = {e: a["orders"] for e, a in live_profiles(engine).items() if e.startswith("person")}
    assert orders == {f"person{i}@gmail.com": i for i in range(250)}


def test_records_deleted_by_the_source_stay_deleted_after_a_remap(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, engine = project
    run_cycle(with_mappings(data, tmp_path), engine)
    write_shopify_customers(  # Ann leaves the (snapshot) export
        tmp_path / "shop" / "customers.csv",
        [shopify_row("7391094784034", "zoe.muller@gmail.com", "Zoe", "Mueller")],
    )
    run_cycle(with_mappings(data, tmp_path), engine)
    forbid_file_reads(monkeypatch)
    shop = SHOP_MAPPING + 'orders = { field = "Total Orders", type = "integer" }\n'
    report = run_cycle(with_mappings(data, tmp_path, shop=shop), engine)
    assert report.remaps["shop/customers"].remapped == 1
    with engine.connect() as conn:
        rows = conn.execute(
            select(R.external_id, R.deleted).where(R.source == "shop").order_by(R.external_id)
        ).all()
    assert [tuple(r) for r in rows] == [("'7391094784034", False), ("'7391094784035", True)]


ORDERS_MAPPING = """
[identifiers]
email = "email"
[[events]]
type = "purchase"
time = { field = "at", type = "datetime" }
[events.properties]
amount = { field = "amount", type = "number" }
"""


def test_changed_event_mapping_rederives_the_events(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(
        tmp_path / "orders.jsonl",
        [
            {"id": "o1", "email": "ann@gmail.com", "amount": "10.5", "sku": "A",
             "at": "2026-10-01T10:00:00Z"},
            {"id": "o2", "email": "bob@gmail.com", "amount": "20", "sku": "B",
             "at": "2026-10-02T10:00:00Z"},
        ],
    )  # fmt: skip
    data = {
        "store": {"url": store_url},
        "sources": [
            {
                "name": "shop",
                "connector": "files",
                "streams": [
                    {
                        "name": "orders",
                        "path": "orders.jsonl",
                        "primary_key": "id",
                        "mapping": "orders.toml",
                    }
                ],
            }
        ],
    }
    (tmp_path / "orders.toml").write_text(ORDERS_MAPPING, encoding="utf-8")
    engine = open_engine(store_url)
    run_cycle(settings_from(data, tmp_path), engine)
    forbid_file_reads(monkeypatch)
    edited = ORDERS_MAPPING.replace('type = "purchase"', 'type = "order"') + 'sku = "sku"\n'
    (tmp_path / "orders.toml").write_text(edited, encoding="utf-8")
    report = run_cycle(settings_from(data, tmp_path), engine)
    assert report.remaps["shop/orders"].as_dict() == {
        "remapped": 2, "changed": 2, "events": 2, "errors": 0,
    }  # fmt: skip
    with engine.connect() as conn:
        events = conn.execute(
            select(P.email, E.type, E.properties)
            .join(Profile.__table__, P.id == E.profile_id)
            .order_by(P.email)
        ).all()
    assert [tuple(e) for e in events] == [
        ("ann@gmail.com", "order", {"amount": 10.5, "sku": "A"}),
        ("bob@gmail.com", "order", {"amount": 20.0, "sku": "B"}),
    ]
    engine.dispose()


def test_changed_default_phone_region_re_maps_streams_whose_phones_use_it(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, engine = project
    write_salesforce_report(
        tmp_path / "crm" / "contacts.csv",
        [salesforce_row("0035g00000AbCdEAAV", "zoe.muller@gmail.com", Phone="030 1234567")],
    )
    run_cycle(with_mappings(data, tmp_path), engine)
    forbid_file_reads(monkeypatch)
    data["identity"] = {**data["identity"], "default_phone_region": "DE"}
    report = run_cycle(with_mappings(data, tmp_path), engine)
    assert set(report.remaps) == {"crm/contacts", "shop/customers"}  # both map region-less phones
    assert report.remaps["crm/contacts"].changed == 1
    with engine.connect() as conn:
        identifiers = conn.execute(select(R.identifiers).where(R.source == "crm")).scalar_one()
    assert ["phone", "+49301234567"] in identifiers
