"""`profiles show` finds a person by any identifier and says when several profiles match;
`profiles list` filters for a first look (issue 11, point 9). On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert
from typer.testing import CliRunner

from syncbridge.cli import app
from syncbridge.config.mapping import Mapping
from syncbridge.config.models import IdentityConfig
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.lookup import find_profiles
from syncbridge.store.tables import ProfileRules, SegmentMembership
from syncbridge.transform import RecordTransformer

from .streams import ListStream, profile_of, resolve

runner = CliRunner()
EMPTY = {"traits": {}, "segments": [], "content": {}, "explain": {}}
MAPPING = Mapping.model_validate(
    tomllib.loads(
        """
[identifiers]
email = "email"
phone = "phone"
external = { "salesforce:contact" = "crm_id", "shopify:customer" = "shop_id" }
[attributes]
first_name = "first_name"
city = "city"
vip = { field = "vip", type = "boolean" }
orders = { field = "orders", type = "integer" }
"""
    )
)


def ingest(engine: Engine, source: str, stream: str, rows: list[dict[str, str]]) -> None:
    job = StreamIngest(source, ListStream(stream, rows), RecordTransformer(MAPPING, "US"))
    ingest_stream(engine, job)


@pytest.fixture
def people(engine: Engine) -> dict[str, int]:
    """Ann in two sources; three people whose only email is the invalid 'n/a'; Bob, whose web
    record carries an invalid address; Cy, whose record has a broken phone (a record error)."""
    ingest(engine, "crm", "contacts", [
        {"id": "c1", "crm_id": "003A", "email": "Ann@Yahoo.com ", "phone": "(415) 555-0132",
         "first_name": "Ann", "city": "Boston", "vip": "yes", "orders": "4"},
        {"id": "c2", "crm_id": "003B", "email": "n/a", "first_name": "Nia", "city": "Boston"},
        {"id": "c3", "crm_id": "003C", "email": "N/A", "first_name": "Noa"},
        {"id": "c4", "crm_id": "003D", "email": "bob@gmail.com", "first_name": "Bob",
         "city": "New York", "vip": "no", "orders": "12"},
        {"id": "c5", "crm_id": "003E", "email": "cy@gmail.com", "phone": "call me"},
    ])  # fmt: skip
    ingest(engine, "shop", "customers", [
        {"id": "s1", "shop_id": "7101116718867", "email": "ann@yahoo.com", "city": "Boston"},
        {"id": "s2", "shop_id": "7101116718868", "email": " n/a "},
    ])  # fmt: skip
    ingest(engine, "web", "identifies", [
        {"id": "w1", "crm_id": "003D", "email": "bob(at)gmail.com"},
    ])  # fmt: skip
    resolve(engine)
    ids = {
        "ann": profile_of(engine, "crm", "contacts", "c1"),
        "nia": profile_of(engine, "crm", "contacts", "c2"),
        "noa": profile_of(engine, "crm", "contacts", "c3"),
        "shop_na": profile_of(engine, "shop", "customers", "s2"),
        "bob": profile_of(engine, "crm", "contacts", "c4"),
        "cy": profile_of(engine, "crm", "contacts", "c5"),
    }
    assert None not in ids.values() and len(set(ids.values())) == 6
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(ProfileRules.__table__), [
            {"profile_id": ids["ann"], "tags": ["Customer_Purchase", "Browsed:Shoes"], **EMPTY},
            {"profile_id": ids["bob"], "tags": ["Browsed:Shoes"], **EMPTY},
        ])  # fmt: skip
        conn.execute(insert(SegmentMembership.__table__), [
            {"segment": "VIP", "profile_id": ids["ann"], "entered_at": now, "exited_at": None},
            {"segment": "VIP", "profile_id": ids["bob"], "entered_at": now, "exited_at": now},
        ])  # fmt: skip
    return ids  # type: ignore[return-value]


@pytest.fixture
def config(tmp_path: Path, engine: Engine) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\nurl = "{engine.url.render_as_string(hide_password=False)}"\n')
    return path


def show(config: Path, query: str) -> tuple[int, str]:
    result = runner.invoke(app, ["profiles", "show", query, "-c", str(config)])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("query", "who", "how"),
    [
        ("  ANN@yahoo.COM ", "ann", "email"),
        ("415-555-0132", "ann", "phone on a record"),
        ("+1 (415) 555 0132", "ann", "phone on a record"),
        ("shopify:customer:7101116718867", "ann", "shopify:customer id"),
        ("salesforce:contact:003D", "bob", "salesforce:contact id"),
        ("crm/contacts/c5", "cy", "record crm/contacts"),
        ("bob(at)gmail.com", "bob", "invalid email on a record"),
    ],
)
def test_one_person_is_found_by_each_kind_of_identifier(
    engine: Engine, people: dict[str, int], query: str, who: str, how: str
) -> None:
    matches = find_profiles(engine, query, "US")
    assert matches.found == {people[who]: [how]}


def test_profile_id_forms_show_that_profile(config: Path, people: dict[str, int]) -> None:
    for query in (f"#{people['bob']}", f"id:{people['bob']}"):
        code, output = show(config, query)
        assert code == 0, output
        assert f"Profile {people['bob']}: bob@gmail.com" in output


def test_show_by_external_id_prints_the_profile(config: Path, people: dict[str, int]) -> None:
    code, output = show(config, "shopify:customer:7101116718867")
    assert code == 0, output
    assert f"Profile {people['ann']}: ann@yahoo.com" in output


def test_an_invalid_email_shared_by_three_lists_them_all(
    config: Path, people: dict[str, int]
) -> None:
    code, output = show(config, "N/A")
    assert code == 0, output
    ids = sorted([people["nia"], people["noa"], people["shop_na"]])
    assert f"3 profiles match; show one with `profiles show id:{ids[0]}`" in output
    rows = [line for line in output.splitlines() if "n/a" in line and "invalid email" in line]
    assert len(rows) == 3, output
    assert any("shop" in line for line in rows) and any("crm" in line for line in rows)


def test_nothing_found_suggests_a_close_email(config: Path, people: dict[str, int]) -> None:
    code, output = show(config, "ann@yahooo.com")
    output = " ".join(output.split())  # as the terminal wraps it
    assert code == 1
    assert "no profile matches 'ann@yahooo.com'" in output
    assert "did you mean 'ann@yahoo.com'?" in output
    code, output = show(config, "zed@nowhere.org")
    assert code == 1 and "did you mean" not in output


def list_ids(config: Path, *args: str) -> list[int]:
    result = runner.invoke(app, ["profiles", "list", "-c", str(config), "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line)["id"] for line in result.output.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "who"),
    [
        (["--source", "shop"], ["ann", "shop_na"]),
        (["--source", "web"], ["bob"]),
        (["--segment", "VIP"], ["ann"]),  # Bob left it
        (["--tag", "Browsed:Shoes"], ["ann", "bob"]),
        (["--tag", "Customer_Purchase"], ["ann"]),
        (["--attribute", "city=Boston"], ["ann", "nia"]),
        (["--attribute", "vip=true"], ["ann"]),
        (["--attribute", "vip=false"], ["bob"]),
        (["--attribute", "orders=12"], ["bob"]),
        (["--attribute", "city=Boston", "--attribute", "orders=4"], ["ann"]),
        (["--has-errors"], ["nia", "noa", "shop_na", "bob", "cy"]),
        (["--invalid-email"], ["nia", "noa", "shop_na"]),
        (["--invalid-email", "--source", "shop"], ["shop_na"]),
        (["--segment", "nobody's"], []),
    ],
)
def test_list_filters(
    config: Path, people: dict[str, int], args: list[str], who: list[str]
) -> None:
    assert list_ids(config, *args) == sorted(people[w] for w in who)


def test_list_is_bounded_and_says_more_match(config: Path, people: dict[str, int]) -> None:
    assert len(list_ids(config, "--limit", "2")) == 2
    result = runner.invoke(app, ["profiles", "list", "-c", str(config), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "More profiles match" in result.output
    summary = json.loads(
        runner.invoke(
            app, ["profiles", "list", "-c", str(config), "--json", "--source", "web"]
        ).output
    )
    assert summary == {"id": people["bob"], "email": "bob@gmail.com", "name": "Bob",
                       "sources": ["crm", "web"], "records": 2, "errors": 1}  # fmt: skip


def test_list_refuses_a_malformed_attribute_filter(config: Path) -> None:
    result = runner.invoke(app, ["profiles", "list", "-c", str(config), "--attribute", "city"])
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.output


def test_phone_as_join_key_is_found_through_its_identity(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [{"id": "c1", "crm_id": "003A", "phone": "415 555 0132"}])
    resolve(engine, IdentityConfig(match_on_phone=True))
    matches = find_profiles(engine, "(415) 555-0132", "US")
    assert matches.found == {profile_of(engine, "crm", "contacts", "c1"): ["phone"]}
