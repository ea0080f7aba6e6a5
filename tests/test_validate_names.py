"""`validate` catches every dangling name: each misspelling is an error with the file, the key
path and a "did you mean", and the shipped example still validates clean."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from syncbridge.bundled import data_dir, example_config
from syncbridge.cli import app
from syncbridge.config.mapping import Mapping
from syncbridge.demo import demo_settings
from syncbridge.errors import ConfigError, Problem
from syncbridge.references import PLACEHOLDER_LIST_ID
from syncbridge.rules.compute import compute_tag, compute_trait
from syncbridge.rules.config import TagConfig, TraitConfig
from syncbridge.settings import load_settings
from syncbridge.transform import RecordTransformer

ENV = {"MAILCHIMP_LIST_ID": "a1b2c3d4e5"}
runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The shipped setup (what `syncbridge init` writes), in a folder of its own."""
    shutil.copyfile(example_config(), tmp_path / "config.toml")
    for sub in ("mappings", "examples"):
        shutil.copytree(data_dir(sub), tmp_path / sub, ignore=shutil.ignore_patterns("*.py"))
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems_of(project: Path, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_settings(project / "config.toml", env or ENV)
    return info.value.problems


# (file edited, old text, misspelled text, file reported, key path, suggestion)
MISSPELLINGS = [
    pytest.param(
        "mappings/rules.toml", "rule = \"lifetime_value > 2000", "rule = \"lifetim_value > 2000",
        "rules.toml", "segments[0].rule", "did you mean 'lifetime_value'?",
        id="segment-rule-unknown-trait",
    ),
    pytest.param(
        "mappings/rules.toml", "rule = 'region = \"NY\"", "rule = 'regoin = \"NY\"",
        "rules.toml", "segments[1].rule", "did you mean 'region'?",
        id="segment-rule-unknown-attribute",
    ),
    pytest.param(
        "mappings/rules.toml", "rule = \"first_order_at within 60d\"", "rule = 'segment \"VIPs\"'",
        "rules.toml", "segments[4].rule", "unknown segment 'VIPs'; did you mean 'VIP'?",
        id="segment-rule-unknown-segment",
    ),
    pytest.param(
        "mappings/rules.toml", "when = 'segment \"VIP\"'", "when = 'segment \"VIPs\"'",
        "rules.toml", "content[0].rules[1].when", "unknown segment 'VIPs'; did you mean 'VIP'?",
        id="content-rule-unknown-segment",
    ),
    pytest.param(
        "mappings/rules.toml", "count(product_viewed within 24h)", "count(product_view within 24h)",
        "rules.toml", "segments[2].rule", "did you mean 'product_viewed'?",
        id="segment-rule-count-unknown-event",
    ),
    pytest.param(
        "mappings/rules.toml", "count(order_completed within 30d)",
        "count(order_completed where totl > 5 within 30d)",
        "rules.toml", "segments[2].rule", "unknown property 'totl' of event 'order_completed'",
        id="segment-rule-count-unknown-property",
    ),
    pytest.param(
        "mappings/rules.toml", 'event = "product_viewed"\nproperty = "category"',
        'event = "product_view"\nproperty = "category"',
        "rules.toml", "traits[8].event", "did you mean 'product_viewed'?",
        id="trait-unknown-event",
    ),
    pytest.param(
        "mappings/rules.toml", 'event = ["product_viewed", "added_to_cart", "checkout_started"',
        'event = ["product_viewed", "added_to_kart", "checkout_started"',
        "rules.toml", "traits[7].event[1]", "did you mean 'added_to_cart'?",
        id="trait-unknown-event-in-list",
    ),
    pytest.param(
        "mappings/rules.toml", 'property = "order_total"', 'property = "ordr_total"',
        "rules.toml", "traits[0].property", "did you mean 'order_total'?",
        id="trait-unknown-property",
    ),
    pytest.param(
        "mappings/rules.toml", 'property = "order"\n', 'property = "order"\nwhere = { financial_stat = "paid" }\n',
        "rules.toml", "traits[1].where.financial_stat", "did you mean 'financial_status'?",
        id="trait-where-unknown-property",
    ),
    pytest.param(
        "mappings/rules.toml", 'name = "Added_to_Cart"\nevent = "added_to_cart"',
        'name = "Added_to_Cart"\nevent = "added_to_crt"',
        "rules.toml", "tags[1].event", "did you mean 'added_to_cart'?",
        id="tag-unknown-event",
    ),
    pytest.param(
        "mappings/rules.toml", 'absent = "order_completed"', 'absent = "order_complete"',
        "rules.toml", "tags[3].absent", "did you mean 'order_completed'?",
        id="tag-unknown-absent-event",
    ),
    pytest.param(
        "mappings/rules.toml", 'name = "Browsed:{category}"', 'name = "Browsed:{categroy}"',
        "rules.toml", "tags[0].name", "did you mean 'category'?",
        id="tag-unknown-name-property",
    ),
    pytest.param(
        "config.toml", 'city = ["shop", "crm"]', 'city = ["shop", "cmr"]',
        "config.toml", "identity.attribute_priority.city[1]", "did you mean 'crm'?",
        id="attribute-priority-unknown-source",
    ),
    pytest.param(
        "config.toml", 'country = ["shop", "crm"]', 'contry = ["shop", "crm"]',
        "config.toml", "identity.attribute_priority.contry", "did you mean 'country'?",
        id="attribute-priority-unknown-attribute",
    ),
    pytest.param(
        "config.toml", 'source_priority = ["crm", "shop", "web"]',
        'source_priority = ["crm", "shop", "wbe"]',
        "config.toml", "identity.source_priority[2]", "did you mean 'web'?",
        id="source-priority-unknown-source",
    ),
    pytest.param(
        "config.toml", 'consent_attribute = "accepts_email_marketing"',
        'consent_attribute = "accepts_email_marketin"',
        "config.toml", "mailchimp.audiences[0].consent_attribute",
        "did you mean 'accepts_email_marketing'?",
        id="consent-attribute",
    ),
    pytest.param(
        "config.toml", 'opt_out_attribute = "email_opt_out"', 'opt_out_attribute = "email_optout"',
        "config.toml", "mailchimp.audiences[0].opt_out_attribute", "did you mean 'email_opt_out'?",
        id="opt-out-attribute",
    ),
    pytest.param(
        "config.toml", 'tag_attributes = ["shop_tags"]', 'tag_attributes = ["shop_tag"]',
        "config.toml", "mailchimp.audiences[0].tag_attributes[0]", "did you mean 'shop_tags'?",
        id="tag-attributes",
    ),
    pytest.param(
        "config.toml", 'source = "first_name"', 'source = "firstname"',
        "config.toml", "mailchimp.audiences[0].merge_fields[0].source",
        "did you mean 'first_name'?",
        id="merge-field-source",
    ),
    pytest.param(
        "config.toml", 'source = "lifetime_value"', 'source = "lifetime_valu"',
        "config.toml", "mailchimp.audiences[0].merge_fields[7].source",
        "did you mean 'lifetime_value'?",
        id="merge-field-source-trait",
    ),
    pytest.param(
        "config.toml", 'removal = "archive"', 'removal = "archive"\nsegment = "VIPs"',
        "config.toml", "mailchimp.audiences[0].segment", "did you mean 'VIP'?",
        id="audience-segment",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edited", "old", "new", "reported", "key_path", "suggestion"), MISSPELLINGS
)
def test_a_dangling_name_is_an_error_with_file_key_path_and_suggestion(
    project: Path, edited: str, old: str, new: str, reported: str, key_path: str, suggestion: str
) -> None:
    edit(project / edited, old, new)
    problems = problems_of(project)
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert Path(problem.file).name == reported
    assert problem.path == key_path
    assert suggestion in problem.message


def test_the_shipped_example_validates_clean(project: Path) -> None:
    settings = load_settings(project / "config.toml", ENV)
    assert settings.warnings == []
    assert demo_settings(project / "demo.db").warnings == []


def test_several_dangling_names_are_all_listed(project: Path) -> None:
    edit(project / "mappings/rules.toml", 'property = "order_total"', 'property = "ordr_total"')
    edit(project / "config.toml", 'source = "first_name"', 'source = "firstname"')
    paths = {p.path for p in problems_of(project)}
    assert paths == {"traits[0].property", "mailchimp.audiences[0].merge_fields[0].source"}


def test_event_types_from_the_data_are_not_flagged_but_their_properties_are(
    project: Path,
) -> None:
    """A `type_field` without `only_mapped` passes any type through: only properties are known."""
    edit(project / "mappings/web_events.toml", "only_mapped = true", "only_mapped = false")
    edit(project / "mappings/rules.toml", 'event = "product_viewed"\nproperty = "category"',
         'event = "Product Clicked"\nproperty = "categry"')  # fmt: skip
    problems = problems_of(project)
    assert [(p.path, "did you mean 'category'?" in p.message) for p in problems] == [
        ("traits[8].property", True)
    ]


def test_a_tag_no_rule_gives_is_an_error_when_no_mapping_brings_tags(project: Path) -> None:
    edit(
        project / "mappings/shop_customers.toml",
        'shop_tags = { field = "Tags", type = "list" }',
        "",
    )
    edit(project / "config.toml", 'tag_attributes = ["shop_tags"]', "tag_attributes = []")
    edit(project / "mappings/rules.toml", 'tag "vip" or ', 'tag "Added_To_Kart" or ')
    problems = problems_of(project)
    assert [p.path for p in problems] == ["segments[3].rule"]
    assert "unknown tag 'Added_To_Kart'" in problems[0].message
    assert "did you mean 'Added_to_Cart'?" in problems[0].message


def test_an_unrecorded_default_consent_attribute_is_a_warning_not_an_error(
    project: Path,
) -> None:
    edit(project / "config.toml", 'consent_attribute = "accepts_email_marketing"', "")
    edit(
        project / "mappings/shop_customers.toml", "accepts_email_marketing = {", "accepts_email = {"
    )
    edit(project / "mappings/rules.toml", "rule = \"accepts_email_marketing and", "rule = \"accepts_email and")  # fmt: skip
    settings = load_settings(project / "config.toml", ENV)
    assert [(w.path, w.message.split(":")[0]) for w in settings.warnings] == [
        (
            "mailchimp.audiences[0].consent_attribute",
            "no mapping produces 'accepts_email_marketing'",
        )
    ]
    assert "no one will be added as subscribed" in settings.warnings[0].message
    result = runner.invoke(app, ["validate", "-c", str(project / "config.toml")], env=ENV)
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "accepts_email_marketing" in result.output


SECRET = "0123456789abcdef0123456789abcdef"


def test_an_api_key_without_its_data_centre_is_an_error_that_never_shows_the_key(
    project: Path,
) -> None:
    env = {**ENV, "MAILCHIMP_API_KEY": SECRET}
    problems = problems_of(project, env)
    assert [p.path for p in problems] == ["mailchimp.api_key"]
    assert "'-us21'" in problems[0].message
    result = runner.invoke(app, ["validate", "-c", str(project / "config.toml")], env=env)
    assert result.exit_code == 1
    shown = result.output + (result.stderr or "")
    assert "mailchimp.api_key" in shown
    assert SECRET not in shown and SECRET[:8] not in shown and SECRET[-8:] not in shown
    load_settings(project / "config.toml", {**env, "MAILCHIMP_API_KEY": SECRET + "-us21"})


def test_the_placeholder_list_id_of_init_is_an_error_once_a_push_would_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("MAILCHIMP_LIST_ID", "MAILCHIMP_API_KEY", "SYNCBRIDGE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert PLACEHOLDER_LIST_ID in example_config().read_text(encoding="utf-8")
    assert runner.invoke(app, ["init"]).exit_code == 0
    without_key = runner.invoke(app, ["validate", "-c", "config.toml"])
    assert without_key.exit_code == 0, without_key.output  # nothing would be pushed
    monkeypatch.setenv("MAILCHIMP_API_KEY", "0123456789abcdef-us21")
    result = runner.invoke(app, ["validate", "-c", "config.toml"])
    assert result.exit_code == 1
    assert "1 problem(s)" in result.output
    assert "config.toml: mailchimp.audiences[0].list_id: still the placeholder" in result.output
    assert "Audience → Settings → Audience name and defaults" in result.output


# -- one meaning for a value filter: a mapping's `when` and a trait's or tag's `where` ----------

NOW = datetime(2026, 11, 23, tzinfo=UTC)
FILTERS = [
    (["paid", "partially_refunded"], "partially_refunded", True),
    (["paid", "partially_refunded"], "refunded", False),
    ("paid", "PAID", True),
    ("paid", " paid ", True),
    ("paid", None, False),
    ("", None, True),
    (99, 99.0, True),
    ([1, 2], 2, True),
    (True, True, True),
    ("true", True, True),
]


def _mapping_selects(expected: Any, value: Any) -> bool:
    mapping = Mapping.model_validate(
        {
            "identifiers": {"email": "email"},
            "events": [
                {
                    "type": "purchase",
                    "when": {"status": expected},
                    "time": {"field": "at", "type": "datetime"},
                }
            ],
        }
    )
    record = {"email": "a@example.com", "at": "2026-11-01T00:00:00Z", "status": value}
    return bool(RecordTransformer(mapping, "US").apply(record).events)


@pytest.mark.parametrize(("expected", "value", "matches"), FILTERS)
def test_trait_and_tag_where_mean_what_a_mapping_when_means(
    expected: Any, value: Any, matches: bool
) -> None:
    assert _mapping_selects(expected, value) is matches
    props = {} if value is None else {"status": value}
    events = [("purchase", NOW - timedelta(days=1), props)]
    trait = TraitConfig(name="n", aggregate="count", event="purchase", where={"status": expected})
    assert compute_trait(trait, events, NOW)[0] == (1 if matches else 0)
    tag = TagConfig(name="T", event="purchase", where={"status": expected})
    assert compute_tag(tag, events, NOW)[0] == ({"T"} if matches else set())


def test_a_where_list_in_a_trait_selects_like_the_same_list_in_a_mapping_when() -> None:
    statuses = ["paid", "partially_refunded", "refunded", "pending", "Paid"]
    expected = ["paid", "partially_refunded"]
    by_mapping = [s for s in statuses if _mapping_selects(expected, s)]
    trait = TraitConfig(
        name="paid_orders", aggregate="count", event="purchase", where={"status": expected}
    )
    events = [("purchase", NOW - timedelta(days=1), {"status": s}) for s in statuses]
    assert by_mapping == ["paid", "partially_refunded", "Paid"]
    assert compute_trait(trait, events, NOW)[0] == len(by_mapping)
