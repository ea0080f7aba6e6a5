"""The command line: thin, honest exit codes, readable output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from syncbridge.cli import app

runner = CliRunner()


def test_init_writes_a_config_that_validates(workdir: Path) -> None:
    assert (workdir / "config.toml").exists()
    assert (workdir / "mappings" / "crm_contacts.toml").exists()
    assert (workdir / "examples" / "shop" / "orders.csv").exists()
    result = runner.invoke(app, ["validate", "-c", "config.toml"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_init_refuses_to_overwrite(workdir: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 1
    assert "not overwriting" in result.output


def test_validate_lists_every_problem_and_fails(workdir: Path) -> None:
    config = (workdir / "config.toml").read_text(encoding="utf-8")
    config = config.replace('cursor_field = "Last Modified Date"', 'cursor_field = "updated"')
    config = config.replace('level = "INFO"', 'level = "LOUD"')
    (workdir / "config.toml").write_text(config, encoding="utf-8")
    result = runner.invoke(app, ["validate", "-c", "config.toml"])
    assert result.exit_code == 1
    assert "2 problem(s)" in result.output
    assert "sources[0].streams[0].cursor_field: unknown column 'updated'" in result.output
    assert "logging.level" in result.output


def test_run_once_then_status_and_profile(workdir: Path) -> None:
    result = runner.invoke(app, ["run", "--once", "-c", "config.toml"])
    assert result.exit_code == 0, result.output
    assert "Identity resolution" in result.output
    status = runner.invoke(app, ["status", "-c", "config.toml"])
    assert status.exit_code == 0, status.output
    assert "crm/contacts" in status.output and "Last runs" in status.output
    missing = runner.invoke(app, ["profiles", "show", "nobody@nowhere.org", "-c", "config.toml"])
    assert missing.exit_code == 1


def test_json_logs_are_one_object_per_line(workdir: Path) -> None:
    result = runner.invoke(app, ["--log-format", "json", "run", "--once", "-c", "config.toml"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    parsed = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(parsed[0])
    assert any("records read" in p["message"] for p in parsed)


def test_db_upgrade_is_idempotent(workdir: Path) -> None:
    first = runner.invoke(app, ["db", "upgrade", "-c", "config.toml"])
    second = runner.invoke(app, ["db", "upgrade", "-c", "config.toml"])
    assert first.exit_code == 0 and "upgraded to revision" in first.output
    assert second.exit_code == 0 and "already at revision" in second.output


def test_secret_from_environment_is_not_printed_on_failure(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "0123456789abcdef0123456789abcdef-us21"
    monkeypatch.setenv("MAILCHIMP_API_KEY", secret)
    monkeypatch.setenv("SYNCBRIDGE_STORE__URL", f"postgresql+psycopg://u:{secret}@127.0.0.1:1/x")
    result = runner.invoke(app, ["run", "--once", "-c", "config.toml"])
    assert result.exit_code != 0
    assert secret not in result.output
    assert secret not in (result.stderr or "")


def test_connectors_list_shows_builtin_files() -> None:
    result = runner.invoke(app, ["connectors", "list"])
    assert result.exit_code == 0
    assert "files" in result.output


def test_validate_reports_a_bad_rule_with_its_name_and_column(workdir: Path) -> None:
    rules = (workdir / "mappings" / "rules.toml").read_text(encoding="utf-8")
    rules = rules.replace(
        'rule = \'region = "NY" or city = "New York"\'',
        'rule = \'region = "NY" city = "New York"\'',
    )
    (workdir / "mappings" / "rules.toml").write_text(rules, encoding="utf-8")
    result = runner.invoke(app, ["validate", "-c", "config.toml"])
    assert result.exit_code == 1
    assert "rules.toml" in result.output
    assert (
        "rule 'NY_Customers', column 15: expected 'and', 'or' or the end of the rule"
        in result.output
    )


def test_edited_mapping_is_reported_as_re_mapped_on_the_next_run(workdir: Path) -> None:
    assert runner.invoke(app, ["run", "--once", "-c", "config.toml"]).exit_code == 0
    mapping = workdir / "mappings" / "crm_contacts.toml"
    mapping.write_text(mapping.read_text(encoding="utf-8") + 'title = "Title"\n', encoding="utf-8")
    result = runner.invoke(app, ["run", "--once", "-c", "config.toml"])
    assert result.exit_code == 0, result.output
    pattern = (
        r"^crm/contacts: mapping changed, ([\d,]+) stored records re-mapped, ([\d,]+) changed$"
    )
    found = re.search(pattern, result.stdout, re.MULTILINE)
    assert found is not None, result.stdout
    remapped, changed = (int(n.replace(",", "")) for n in found.groups())
    assert remapped > changed > 0  # contacts without a title did not change
    assert "shop/customers: mapping changed" not in result.stdout
    assert "mapping changed" in result.stderr  # and logged


def test_full_refresh_rereads_every_stream(workdir: Path) -> None:
    assert runner.invoke(app, ["run", "--once", "-c", "config.toml"]).exit_code == 0
    again = runner.invoke(app, ["--log-format", "json", "run", "--once", "-c", "config.toml"])
    assert "records read" not in again.stderr  # unchanged exports are skipped
    result = runner.invoke(
        app, ["--log-format", "json", "run", "--once", "--full-refresh", "-c", "config.toml"]
    )
    assert result.exit_code == 0, result.output
    assert "full refresh: reading crm/contacts, " in result.stderr
    assert "crm/contacts records read" in result.stderr


def test_full_refresh_of_an_unknown_stream_says_what_was_meant(workdir: Path) -> None:
    result = runner.invoke(
        app, ["run", "--once", "--full-refresh", "crm/contact", "-c", "config.toml"]
    )
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "no enabled source or stream 'crm/contact'" in output
    assert "did you mean 'crm/contacts'?" in output


def test_stream_names_without_full_refresh_are_refused(workdir: Path) -> None:
    result = runner.invoke(app, ["run", "--once", "crm", "-c", "config.toml"])
    assert result.exit_code == 2
    assert "--full-refresh" in result.output


def test_run_says_the_push_was_skipped_and_unchanged_streams_had_nothing_new(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    first = runner.invoke(app, ["run", "--once", "-c", "config.toml"])
    assert first.exit_code == 0, first.output
    said = " ".join(first.stdout.split())
    assert (
        "Push skipped: no Mailchimp API key (set MAILCHIMP_API_KEY or [mailchimp] api_key)" in said
    )
    assert "nothing new" not in first.stdout
    again = runner.invoke(app, ["run", "--once", "-c", "config.toml"])
    assert again.exit_code == 0, again.output
    assert "- nothing new since the last read" in again.stdout
    rows = [line for line in again.stdout.splitlines() if line.startswith("│ crm/")]
    assert rows and " - │" in rows[0] and " 0 " not in rows[0], again.stdout


def test_missing_config_points_at_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["status"])
    assert result.exit_code != 0
    assert "config.toml: file not found; `syncbridge init` writes one" in result.output


def test_connectors_describe_lists_a_file_streams_columns_with_samples(workdir: Path) -> None:
    result = runner.invoke(
        app, ["connectors", "describe", "crm", "contacts", "-c", "config.toml"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "Last Modified Date" in rows and "date/time" in rows["Last Modified Date"]
    assert "Email Opt Out" in rows and "boolean (0/1)" in rows["Email Opt Out"]
    assert "@" in rows["Email"]  # a sample value
    events = runner.invoke(
        app, ["connectors", "describe", "web", "events", "-c", "config.toml"], terminal_width=200
    )
    assert events.exit_code == 0, events.output
    assert "traits.email" in events.stdout and "context.page.url" in events.stdout
    wrong = runner.invoke(app, ["connectors", "describe", "crm", "contcts", "-c", "config.toml"])
    assert wrong.exit_code != 0
    assert "source 'crm' has no stream 'contcts' (streams: contacts)" in wrong.output
