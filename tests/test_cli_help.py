"""The command line a newcomer meets first (issue 16, point 1): what `--help` says, flags shown
as flags, choices listed, `--version`, global options after the command, `--demo` on plan
and push."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from syncbridge.cli import app, global_options_first

runner = CliRunner()


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, (*path, name))
    return found


def test_no_command_shows_a_flag_as_taking_a_value() -> None:
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 15
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path


def test_the_help_says_what_syncbridge_does_and_where_to_start() -> None:
    result = runner.invoke(app, ["--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert text.find("syncbridge keeps Mailchimp audiences in step") < text.find("Options")
    for step in ("syncbridge demo", "syncbridge init", "syncbridge validate",
                 "syncbridge run --once", "syncbridge plan", "syncbridge daemon"):  # fmt: skip
        assert step in text
    assert "<text|json>" in text and "<debug|info|warning|error>" in text
    assert "parse arguments" not in text  # the module's docstring is for developers


def test_version_and_bad_choices() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("syncbridge ")
    bad = runner.invoke(app, ["--log-format", "xml", "status"], terminal_width=200)
    assert bad.exit_code == 2
    assert "'xml' is not one of 'text'," in bad.output and "'json'" in bad.output


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        (["run", "--once", "--log-format", "json"], ["--log-format", "json", "run", "--once"]),
        (["status", "--log-level=DEBUG", "--demo"], ["--log-level=DEBUG", "status", "--demo"]),
        (["--log-level", "info", "plan"], ["--log-level", "info", "plan"]),
        (["run", "--", "--log-format", "x"], ["run", "--", "--log-format", "x"]),
    ],
)
def test_global_options_may_follow_the_command(typed: list[str], parsed: list[str]) -> None:
    assert global_options_first(typed) == parsed


def test_plan_and_push_take_the_demo_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    missing = runner.invoke(app, ["plan", "--demo"], terminal_width=200)
    assert missing.exit_code != 0 and "run `syncbridge demo`" in missing.output
    assert runner.invoke(app, ["demo"]).exit_code == 0
    planned = runner.invoke(app, ["plan", "--demo"], terminal_width=200)
    assert planned.exit_code == 0 and "Plan for audience customers" in planned.output
    pushed = runner.invoke(app, ["push", "--demo"], terminal_width=200)
    assert pushed.exit_code != 0 and "--audience" in pushed.output


def test_plan_json_lists_who_is_skipped_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, point 4: each member left out, with the reason; "no consent recorded" is
    not counted as an opt-out."""
    import json

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    assert runner.invoke(app, ["demo"]).exit_code == 0
    result = runner.invoke(app, ["plan", "--demo", "--json", "-"])
    assert result.exit_code == 0, result.output
    (plan,) = json.loads(result.stdout)
    reasons: dict[str, list[str]] = {}
    for item in plan["skipped"]:
        reasons.setdefault(item["reason"], []).append(item["email"])
    assert {"no consent recorded", "opted out", "invalid email"} <= set(reasons)
    assert "rachel_morris at fastmail.com" in reasons["invalid email"]  # a broken sample address
    assert {r: len(e) for r, e in reasons.items()} == {
        r.removeprefix("skipped: "): n for r, n in plan["counts"].items() if r.startswith("skipped")
    }


def test_segments_preview_shows_the_merge_values_a_member_would_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, point 6: which HEADLINE a VIP sees, not only their traits."""
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["demo"]).exit_code == 0
    result = runner.invoke(app, ["segments", "preview", "VIP", "--demo", "--limit", "2"],
                           terminal_width=400)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "What they would get in audience customers" in result.output
    assert "HEADLINE" in result.output and "Early access, just for you" in result.output


def test_without_a_terminal_progress_is_a_few_lines_not_one_per_member(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16, point 3: a push of 133 members once logged 133 lines."""
    import logging

    from syncbridge import cli

    with caplog.at_level(logging.INFO, logger="syncbridge"), cli._progress() as hook:
        assert hook is not None
        for _ in range(133):
            hook("new members", 1)
        hook("tag additions", 500)
        hook("crm/Contact records read", 2000, share=0.4, expected=5000)
        hook("crm/Contact records read", 3000, share=1.0, expected=5000)
    said = [r.getMessage() for r in caplog.records]
    lines = [m for m in said if m.startswith(("new", "tag", "crm"))]
    assert lines == ["new members: 1", "tag additions: 500",
                     "crm/Contact records read: 2000 (40%)", "new members: 133",
                     "crm/Contact records read: 5000 (100%)"]  # fmt: skip


def test_the_live_display_hears_when_the_cycle_moves_to_the_next_stage(tmp_path: Path) -> None:
    """Issue 16, point 3: the stream counts stop spinning once resolution starts."""
    from syncbridge.demo import demo_settings
    from syncbridge.pipeline import STAGE, run_cycle
    from syncbridge.store.engine import open_engine

    settings = demo_settings(tmp_path / "demo.db")
    heard: list[str] = []
    shares: dict[str, float | None] = {}

    def hook(
        label: str, n: int, *, share: float | None = None, expected: int | None = None
    ) -> None:
        heard.append(label)
        shares[label] = share

    run_cycle(settings, open_engine(settings.config.store.url), hook)
    # the files connector says how much of its files it has read: all of them, at the end
    assert {label: share for label, share in shares.items() if label.endswith("read")} == {
        f"{s}/{t} records read": 1.0
        for s, t in (("crm", "contacts"), ("shop", "customers"), ("shop", "orders"),
                     ("web", "events"))
    }  # fmt: skip
    stages = [label.removeprefix(STAGE) for label in heard if label.startswith(STAGE)]
    assert stages == ["resolving identities", "evaluating rules"]
    first_stage = heard.index(STAGE + "resolving identities")
    assert all(label.endswith("records read") for label in heard[:first_stage])
    assert heard[first_stage - 1].endswith("records read")
