"""`/metrics` content (issue 14, points 3 and 6): a real cycle from files to the Mailchimp fake
shows up in the Prometheus exposition with the right series and values, and no label value
is an email, a key, a list id, a hash or a record id."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine

from syncbridge import metrics
from syncbridge.pipeline import run_cycle
from syncbridge.push.client import MailchimpClient
from syncbridge.store.engine import open_engine

from .builders import (
    salesforce_row,
    settings_from,
    shopify_row,
    two_source_config,
    write_salesforce_report,
    write_shopify_customers,
)
from .fakes.mailchimp import FakeMailchimp

EMAIL = re.compile(r"@|%40")
HEXISH = re.compile(r"[0-9a-f]{16,}")
ENDPOINT = re.compile(r"(/([A-Za-z_][A-Za-z_-]*|\{id\}|v?\d+(\.\d+)*))+|/")


@pytest.fixture(autouse=True)
def _unwatch() -> Iterator[None]:
    yield
    metrics.unwatch_journal()


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    with FakeMailchimp() as server:
        server.add_list("L1")
        yield server


def setup_for(tmp_path: Path, fake: FakeMailchimp) -> Any:
    write_salesforce_report(
        tmp_path / "crm" / "contacts.csv",
        [salesforce_row("0035g00000AbCdE1", "ann.lee@yahoo.com", "Ann", "Lee"),
         salesforce_row("0035g00000AbCdE2", "bo.chen@gmail.com", "Bo", "Chen")],
    )  # fmt: skip
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [shopify_row("7101116718867", "ann.lee@yahoo.com", "Ann", "Lee"),
         shopify_row("7101116718868", "cy.diaz@gmail.com", "Cy", "Diaz"),
         shopify_row("7101116718869", "test@example.com", "Fake", "Person")],
    )  # fmt: skip
    data = two_source_config(tmp_path, f"sqlite:///{tmp_path / 'cache.db'}")
    data["mailchimp"] = {
        "api_key": fake.api_key, "api_base_url": fake.base_url, "retries": 3,
        "audiences": [{"name": "customers", "list_id": "L1"}],
    }  # fmt: skip
    return settings_from(data, tmp_path)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_cycle_against_the_fakes_shows_in_the_exposition(
    tmp_path: Path, fake: FakeMailchimp
) -> None:
    settings = setup_for(tmp_path, fake)
    engine = open_engine(settings.config.store.url)
    client = MailchimpClient(settings.config.mailchimp, backoff_s=0.001)
    fake.fail_next(1, status=429, retry_after=0, path_contains="/lists/L1/merge-fields")
    names = [
        ("syncbridge_records_pulled_total", {"source": "crm", "stream": "contacts"}),
        ("syncbridge_records_pulled_total", {"source": "shop", "stream": "customers"}),
        ("syncbridge_members_pushed_total", {"audience": "customers"}),
        ("syncbridge_members_refused_total", {"audience": "customers"}),
        ("syncbridge_push_operations_total", {"audience": "customers", "operation": "new_members"}),
        (
            "syncbridge_api_rate_limited_total",
            {"service": "Mailchimp", "endpoint": "/lists/{id}/merge-fields"},
        ),
        ("syncbridge_api_retries_total", {"service": "Mailchimp", "reason": "429"}),
        ("syncbridge_cycles_total", {"status": "ok"}),
        ("syncbridge_stage_duration_seconds_count", {"stage": "ingest"}),
        ("syncbridge_stage_duration_seconds_count", {"stage": "push"}),
    ]
    before = {(n, tuple(sorted(labels.items()))): value(n, **labels) for n, labels in names}

    run_cycle(settings, engine, client=client)

    after = {(n, tuple(sorted(labels.items()))): value(n, **labels) for n, labels in names}
    delta = {key[0] + str(dict(key[1])): after[key] - before[key] for key in before}
    assert list(delta.values()) == [2, 3, 2, 1, 2, 1, 1, 1, 1, 1], delta
    text = generate_latest().decode()
    assert re.search(
        r'syncbridge_api_calls_total\{endpoint="/lists/\{id\}",method="POST",service="Mailchimp",'
        r'status="200"\} \d', text
    ), text  # fmt: skip
    assert (
        'syncbridge_api_errors_total{endpoint="/lists/{id}/merge-fields",service="Mailchimp",status="429"}'
        in text
    )
    assert "syncbridge_cycle_duration_seconds_bucket" in text


def test_no_label_carries_an_email_a_key_an_id_or_a_raw_path(
    tmp_path: Path, fake: FakeMailchimp
) -> None:
    settings = setup_for(tmp_path, fake)
    engine = open_engine(settings.config.store.url)
    run_cycle(settings, engine, client=MailchimpClient(settings.config.mailchimp))
    metrics.watch_journal(engine)
    families = list(text_string_to_metric_families(generate_latest().decode()))
    ours = [f for f in families if f.name.startswith("syncbridge_")]
    assert {"syncbridge_journal_lag", "syncbridge_api_calls"} <= {f.name for f in ours}
    ids = {"L1", "0035g00000AbCdE1", "7101116718867", fake.api_key, fake.api_key.split("-")[0]}
    for family in ours:
        for sample in family.samples:
            for label, text in sample.labels.items():
                assert not EMAIL.search(text), sample
                assert not HEXISH.search(text), sample
                assert not any(i in text for i in ids), sample
                if label == "endpoint":
                    assert ENDPOINT.fullmatch(text), sample


def test_journal_lag_is_read_from_the_cache_at_scrape_time(
    tmp_path: Path, fake: FakeMailchimp
) -> None:
    settings = setup_for(tmp_path, fake)
    engine = open_engine(settings.config.store.url)
    run_cycle(settings, engine, client=MailchimpClient(settings.config.mailchimp))
    metrics.watch_journal(engine)
    assert value("syncbridge_cache_up") == 1
    assert value("syncbridge_journal_lag", consumer="identity") == 0
    assert value("syncbridge_journal_lag", consumer="mailchimp:customers") == 0
    write_shopify_customers(
        tmp_path / "shop" / "customers.csv",
        [shopify_row("7101116718867", "ann.lee@yahoo.com", "Ann", "Leigh")],
    )
    from syncbridge.ingest import ingest_streams
    from syncbridge.pipeline import stream_jobs

    jobs = stream_jobs(settings)
    ingest_streams(engine, [jobs["shop/customers"]], 1)  # new journal entries, nobody read them
    assert value("syncbridge_journal_lag", consumer="identity") >= 1
    assert value("syncbridge_journal_offset", consumer="identity") > 0


def test_records_are_counted_per_committed_page_whoever_runs_the_ingest(
    tmp_path: Path, fake: FakeMailchimp
) -> None:
    """The daemon's pull jobs call ingest directly, not `run_cycle`: the count is ingest's."""
    from syncbridge.ingest import ingest_streams
    from syncbridge.pipeline import stream_jobs

    settings = setup_for(tmp_path, fake)
    engine = open_engine(settings.config.store.url)
    labels = {"source": "shop", "stream": "customers"}
    before = value("syncbridge_records_pulled_total", **labels)
    ingest_streams(engine, [stream_jobs(settings)["shop/customers"]], 1)
    assert value("syncbridge_records_pulled_total", **labels) - before == 3


def test_a_cache_that_does_not_answer_reports_down_not_a_failed_scrape(tmp_path: Path) -> None:
    broken: Engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    metrics.watch_journal(broken)
    text = generate_latest().decode()
    assert "syncbridge_cache_up 0.0" in text
    assert "syncbridge_journal_lag{" not in text


@pytest.mark.parametrize(
    ("path", "template"),
    [
        (
            "/lists/a1b2c3d4e5/members/5f3e0c1b2a4d6e8f9a0b1c2d3e4f5a6b/tags",
            "/lists/{id}/members/{id}/tags",
        ),
        ("/lists/abcdefabcd/segments/12345/members", "/lists/{id}/segments/{id}/members"),
        ("/lists/L1/members/<email>", "/lists/{id}/members/{id}"),
        ("/batches/x9y8z7", "/batches/{id}"),
        ("/services/data/v60.0/query", "/services/data/v60.0/query"),
        ("/services/data/v60.0/query/01gD0000002HU6KIAW-2000", "/services/data/v60.0/query/{id}"),
        (
            "/services/data/v60.0/sobjects/Contact/describe",
            "/services/data/v60.0/sobjects/Contact/describe",
        ),
        (
            "/services/data/v60.0/jobs/query/750R0000000zlh9IAA/results",
            "/services/data/v60.0/jobs/query/{id}/results",
        ),
        ("/services/Soap/u/60.0", "/services/Soap/u/60.0"),
        ("/", "/"),
    ],
)
def test_endpoint_templates_keep_names_and_drop_ids(path: str, template: str) -> None:
    assert metrics.endpoint_of(path) == template
