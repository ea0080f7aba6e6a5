"""Config loading: every problem found and reported with file, key path and reason."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from syncbridge.config.loader import load_config
from syncbridge.errors import ConfigError
from syncbridge.logs import setup_logging
from syncbridge.redaction import redact
from syncbridge.settings import load_settings

from .builders import CRM_MAPPING, salesforce_row, write_salesforce_report

GOOD = """
[store]
url = "sqlite:///cache.db"

[mailchimp]
api_key = "${MC_KEY}"

[[sources]]
name = "crm"
connector = "files"

[[sources.streams]]
name = "contacts"
path = "contacts.csv"
primary_key = "Contact ID"
cursor_field = "Last Modified Date"
mapping = "crm.toml"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_salesforce_report(tmp_path / "contacts.csv", [salesforce_row("003A", "a@gmail.com")])
    (tmp_path / "crm.toml").write_text(CRM_MAPPING, encoding="utf-8")
    (tmp_path / "config.toml").write_text(GOOD, encoding="utf-8")
    return tmp_path


def problems_of(path: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env)
    return [str(p) for p in info.value.problems]


def test_valid_config_loads_with_mappings(project: Path) -> None:
    settings = load_settings(project / "config.toml", {"MC_KEY": "abc123secret-us21"})
    assert settings.config.sources[0].streams[0].name == "contacts"
    assert len(settings.mappings) == 1


def test_unknown_cursor_column_names_file_key_path_and_columns(project: Path) -> None:
    text = GOOD.replace('cursor_field = "Last Modified Date"', 'cursor_field = "updated"')
    (project / "config.toml").write_text(text, encoding="utf-8")
    problems = problems_of(project / "config.toml", {"MC_KEY": "k-us1"})
    assert len(problems) == 1
    assert str(project / "config.toml") in problems[0]
    assert "sources[0].streams[0].cursor_field: unknown column 'updated'" in problems[0]
    assert "'Last Modified Date'" in problems[0]


def test_all_problems_are_listed_not_just_the_first(project: Path) -> None:
    text = (
        GOOD.replace('url = "sqlite:///cache.db"', 'url = "mysql://x"\ncolour = "blue"')
        .replace('"Contact ID"', '"Id"')
        .replace('connector = "files"', 'connector = "files"\nbatch = 3')
    )
    (project / "config.toml").write_text(text, encoding="utf-8")
    problems = "\n".join(problems_of(project / "config.toml", {}))
    assert "store.url: store.url must be a sqlite:/// or postgresql+psycopg:// URL" in problems
    assert "store.colour: unknown key" in problems
    assert "mailchimp.api_key: environment variable MC_KEY is not set" in problems


def test_connector_options_and_columns_checked_together(project: Path) -> None:
    text = GOOD.replace('"Contact ID"', '"Id"').replace(
        'mapping = "crm.toml"', 'mapping = "crm.toml"\nencoding = "klingon"'
    )
    (project / "config.toml").write_text(text, encoding="utf-8")
    problems = "\n".join(problems_of(project / "config.toml", {"MC_KEY": "k-us1"}))
    assert "sources[0].streams[0].encoding: unknown encoding 'klingon'" in problems


def test_unknown_column_in_mapping_names_mapping_file(project: Path) -> None:
    (project / "crm.toml").write_text(
        CRM_MAPPING.replace('first_name = "First Name"', 'first_name = "Firstname"'),
        encoding="utf-8",
    )
    problems = problems_of(project / "config.toml", {"MC_KEY": "k-us1"})
    assert any(
        p.startswith(str(project / "crm.toml"))
        and "attributes.first_name: unknown column 'Firstname'" in p
        for p in problems
    ), problems


def test_bad_mapping_values_are_reported_with_their_key(project: Path) -> None:
    (project / "crm.toml").write_text(
        CRM_MAPPING.replace('"America/Los_Angeles"', '"Mars/Olympus"').replace(
            'type = "boolean"', 'type = "yesno"'
        ),
        encoding="utf-8",
    )
    problems = "\n".join(problems_of(project / "config.toml", {"MC_KEY": "k-us1"}))
    assert "record.timestamp.timezone: unknown timezone 'Mars/Olympus'" in problems
    assert "attributes.email_opt_out.type: Input should be" in problems


def test_unknown_connector_lists_installed_ones(project: Path) -> None:
    (project / "config.toml").write_text(GOOD.replace('"files"', '"ftp"'), encoding="utf-8")
    problems = problems_of(project / "config.toml", {"MC_KEY": "k-us1"})
    assert "sources[0].connector: unknown connector 'ftp' (installed: files" in problems[0]


def test_invalid_toml_says_where(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[store\nurl = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.toml: not valid TOML: .*line 1"):
        load_config(tmp_path / "config.toml", {})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", {})


def test_environment_overrides_win_over_the_file(project: Path) -> None:
    env = {
        "MC_KEY": "k",
        "SYNCBRIDGE_STORE__URL": "sqlite:///other.db",
        "SYNCBRIDGE_MAILCHIMP__API_BASE_URL": "http://127.0.0.1:9999/3.0",
        "SYNCBRIDGE_SOURCES__CRM__STREAMS__CONTACTS__PAGE_SIZE": "17",
        "SYNCBRIDGE_IDENTITY__SOURCE_PRIORITY": '["crm"]',
        "SYNCBRIDGE_TEST_POSTGRES_URL": "ignored: not a section__key variable",
    }
    settings = load_settings(project / "config.toml", env)
    config = settings.config
    assert config.store.url == "sqlite:///other.db"
    assert config.mailchimp.api_base_url == "http://127.0.0.1:9999/3.0"
    assert config.sources[0].streams[0].model_extra["page_size"] == "17"
    assert config.identity.source_priority == ["crm"]


def test_unknown_environment_override_is_reported(project: Path) -> None:
    problems = problems_of(
        project / "config.toml", {"MC_KEY": "k-us1", "SYNCBRIDGE_STOR__URL": "x"}
    )
    assert problems == [f"{project / 'config.toml'}: stor: unknown key"]


def test_secret_never_appears_in_repr_logs_or_errors(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "f00dbabe1234567890abcdef-us21"
    config = load_config(project / "config.toml", {"MC_KEY": secret})
    assert config.mailchimp.api_key is not None
    assert config.mailchimp.api_key.get_secret_value() == secret
    assert secret not in repr(config)
    assert secret not in str(config.model_dump())
    assert secret not in redact(f"401 from Mailchimp for key {secret}")
    setup_logging("INFO")
    with caplog.at_level(logging.INFO):
        logging.getLogger("syncbridge.test").warning("calling with %s", secret)
    assert secret not in caplog.text
    assert "***" in caplog.text


def test_secret_in_bad_value_is_not_echoed(project: Path) -> None:
    text = GOOD.replace("[mailchimp]", '[mailchimp]\napi_base_url = ["${MC_KEY}"]')
    (project / "config.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(project / "config.toml", {"MC_KEY": "s3cr3t-value-us1"})
    assert "s3cr3t-value-us1" not in str(info.value)
    assert "mailchimp.api_base_url" in str(info.value)


def test_database_url_password_is_redacted(project: Path) -> None:
    env = {"MC_KEY": "k", "SYNCBRIDGE_STORE__URL": "postgresql+psycopg://sync:hunter2pw@db/x"}
    load_config(project / "config.toml", env)
    assert "hunter2pw" not in redact(
        "connection to postgresql+psycopg://sync:hunter2pw@db/x failed"
    )


def test_config_errors_say_what_is_expected_not_the_pattern(project: Path) -> None:
    """A bad merge-field tag or source name is explained in words, never as a regex."""
    bad = (
        GOOD.replace('name = "crm"', 'name = "CRM-Export"')
        + """
[[mailchimp.audiences]]
name = "customers"
list_id = "abc"

[[mailchimp.audiences.merge_fields]]
tag = "first-name"
name = "First name"
source = "first_name"
"""
    )
    (project / "config.toml").write_text(bad, encoding="utf-8")
    problems = "\n".join(problems_of(project / "config.toml", {"MC_KEY": "k-us1"}))
    assert "should match pattern" not in problems and "^[" not in problems, problems
    assert "sources[0].name: use lower-case letters, digits and '_'" in problems
    assert (
        "merge_fields[0].tag: merge field tag 'first-name' is not one Mailchimp accepts" in problems
    )
    assert "(e.g. 'FIRST_NAME')" in problems


def test_missing_config_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"file not found; `syncbridge init` writes one"):
        load_config(tmp_path / "config.toml", {})
