"""`syncbridge runs` and `syncbridge errors` (issue 14, point 6): recent runs with counts per
stage and the failure reason; per-record errors with filters; tables for people, JSON lines
on stdout for machines; and in JSON log mode every line of both streams parses."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from syncbridge.cli import app

runner = CliRunner()
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def break_orders(workdir: Path) -> None:
    """A byte UTF-8 cannot read at the end of the orders export: reading it fails the run."""
    path = workdir / "examples" / "shop" / "orders.csv"
    path.write_bytes(path.read_bytes() + b"#9999,caf\xe9\n")


def test_runs_lists_the_newest_first_with_stage_counts_and_the_failure_reason(
    workdir: Path,
) -> None:
    invoke("run", "--once")
    break_orders(workdir)
    assert runner.invoke(app, ["run", "--once"]).exit_code == 1

    runs = json_lines(invoke("runs", "--json").stdout)

    assert [r["status"] for r in runs] == ["failed", "ok"]
    failed, ok = runs
    assert failed["run_id"] > ok["run_id"]
    assert "orders.csv" in failed["reason"]
    assert ok["reason"] is None
    assert ok["stages"]["ingest"]["totals"]["read"] > 300
    assert ok["stages"]["ingest"]["streams"]["crm/contacts"]["read"] > 0
    assert ok["stages"]["identity"]["profiles_created"] > 0
    assert ok["stages"]["rules"]["evaluated"] > 0
    assert ok["seconds"] >= 0
    table = invoke("runs").stdout
    assert "Recent runs (2)" in table and f"run {failed['run_id']} failed: " in table
    assert "byte 0xE9 is not utf-8-sig text" in " ".join(table.split())  # wherever it wraps
    assert len(json_lines(invoke("runs", "--json", "--limit", "1").stdout)) == 1


def test_errors_filters_by_source_stream_and_since(workdir: Path) -> None:
    invoke("run", "--once")
    every = json_lines(invoke("errors", "--json", "--limit", "1000").stdout)
    assert every, "the sample exports carry deliberately broken values"
    assert {"source", "stream", "record", "field", "value", "message", "run_id"} <= set(every[0])
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    crm = json_lines(invoke("errors", "--json", "--source", "crm", "--limit", "1000").stdout)
    assert crm and all(e["source"] == "crm" for e in crm)
    assert len(crm) < len(every)
    by_label = invoke("errors", "--json", "--stream", "crm/contacts", "--limit", "1000").stdout
    by_name = invoke("errors", "--json", "--stream", "contacts", "--limit", "1000").stdout
    assert json_lines(by_label) == [
        e for e in every if e["stream"] == "contacts" and e["source"] == "crm"
    ]
    assert {e["stream"] for e in json_lines(by_name)} == {"contacts"}
    recent = json_lines(invoke("errors", "--json", "--since", "1h", "--limit", "1000").stdout)
    assert len(recent) == len(every)
    assert json_lines(invoke("errors", "--json", "--since", "2999-01-01").stdout) == []
    assert len(json_lines(invoke("errors", "--json", "--limit", "2").stdout)) == 2
    table = invoke("errors", "--limit", "2").stdout
    assert "Record errors (2+)" in table and "--limit 10 shows more" in table


def test_errors_refuses_a_since_it_cannot_read(workdir: Path) -> None:
    result = runner.invoke(app, ["errors", "--since", "yesterday-ish"])
    assert result.exit_code == 2
    assert "neither a duration like 1h" in result.output


def test_json_log_mode_keeps_both_streams_parseable_and_carries_fields(workdir: Path) -> None:
    result = runner.invoke(app, ["--log-format", "json", "--log-level", "DEBUG", "run", "--once"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # the tables for people are suppressed
    lines = json_lines(result.stderr)  # every line parses
    summary = next(line for line in lines if line["message"].startswith("run "))
    assert summary["job"] == "run" and summary["status"] == "ok"
    assert isinstance(summary["run_id"], int) and str(summary["run_id"]) in summary["message"]
    assert summary["counts"]["records"]["read"] > 300
    assert "{" not in summary["message"]
    stages = {line["stage"]: line for line in lines if "stage" in line}
    assert {"ingest", "identity", "rules"} <= set(stages)
    assert stages["identity"]["counts"]["records"] > 0
    assert all(line["run_id"] == summary["run_id"] for line in stages.values())
    assert EMAIL.findall(result.stderr) == []

    machine = runner.invoke(app, ["--log-format", "json", "runs", "--json"])
    assert machine.exit_code == 0
    assert json_lines(machine.stdout)[0]["run_id"] == summary["run_id"]
    status = runner.invoke(app, ["--log-format", "json", "status", "--json"])
    assert json.loads(status.stdout)["runs"]


def test_a_failure_in_json_log_mode_is_a_json_line(workdir: Path) -> None:
    break_orders(workdir)
    result = runner.invoke(app, ["--log-format", "json", "run", "--once"])
    assert result.exit_code == 1
    lines = json_lines(result.stderr)
    error = lines[-1]
    assert error["level"] == "error" and "orders.csv" in error["message"]
    assert error["exit_code"] == 1 and error["job"] == "run"


def test_json_log_mode_still_shows_the_tables_to_someone_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syncbridge import cli

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    cli._set_logging("INFO", "json")
    assert cli.out.quiet is False
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    cli._set_logging("INFO", "json")
    assert cli.out.quiet is True
    cli._set_logging("INFO", "text")
    assert cli.out.quiet is False
