"""The demo: the whole pipeline on the bundled sample exports, with no credentials."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from syncbridge.cli import app
from syncbridge.demo import DEMO_DB
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Profile, RecordErrorRow

runner = CliRunner()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    return tmp_path


def test_demo_runs_then_continues_then_resets(in_tmp: Path) -> None:
    first = runner.invoke(app, ["demo"])
    assert first.exit_code == 0, first.output
    assert "new cache" in first.output
    assert (in_tmp / DEMO_DB).exists()
    engine = open_engine(f"sqlite:///{in_tmp / DEMO_DB}")
    with engine.connect() as conn:
        live = conn.execute(
            select(func.count()).where(Profile.__table__.c.deleted.is_(False))
        ).scalar_one()
        errors = conn.execute(select(func.count()).select_from(RecordErrorRow)).scalar_one()
    assert 250 <= live <= 450  # ~320 people plus anonymous visitors, merged across sources
    assert errors > 0  # the sample data carries deliberately broken values

    second = runner.invoke(app, ["demo"])
    assert second.exit_code == 0, second.output
    assert "continuing from the previous run" in second.output
    assert "profiles created     │     0" in second.output

    third = runner.invoke(app, ["demo", "--reset"])
    assert third.exit_code == 0 and "new cache" in third.output
    # a fresh demo prints the same as the first one did: profile ids, samples, error rows
    assert _without_timings(third.output) == _without_timings(first.output)
    engine.dispose()


def _without_timings(output: str) -> list[str]:
    return [line for line in output.splitlines() if not re.search(r"\d+\.\d+ ?s\b|INFO", line)]


def test_demo_profile_can_be_inspected(in_tmp: Path) -> None:
    runner.invoke(app, ["demo"])
    status = runner.invoke(app, ["status", "--demo"])
    assert status.exit_code == 0 and "shop/orders" in status.output
    # the README's examples name people the sample data has
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"profiles show (\S+)", readme) + re.findall(
        r"(shopify:customer:\d+)", readme
    )
    assert shown
    for who in {w for w in shown if w not in ("EMAIL",)}:
        found = runner.invoke(app, ["profiles", "show", who, "--demo"])
        assert found.exit_code == 0 and "Profile " in found.output, (who, found.output)
    listed = re.search(r"profiles list --segment (\S+) --attribute \"([^\"]+)\"", readme)
    assert listed, "README's profiles list example"
    segment, attribute = listed.groups()
    found = runner.invoke(
        app, ["profiles", "list", "--segment", segment, "--attribute", attribute, "--demo"]
    )
    assert found.exit_code == 0 and "No profile matches" not in found.output, found.output


def test_demo_gives_every_example_segment_and_behaviour_tag_members(in_tmp: Path) -> None:
    from syncbridge import views

    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    engine = open_engine(f"sqlite:///{in_tmp / DEMO_DB}")
    segments = views.segment_counts(engine)
    tags = views.tag_counts(engine)
    expected = {"High-Value Customers", "NY_Customers", "Viewed 24h, cart over 100", "VIP", "New",
                "Inactive subscribers"}  # fmt: skip
    assert expected <= {name for name, n in segments.items() if n > 0}
    assert {"Added_to_Cart", "Customer_Purchase", "Cart_Abandoned"} <= set(tags)
    assert any(t.startswith("Browsed:") for t in tags)
    for name in expected:
        assert name in result.output
    preview = runner.invoke(app, ["segments", "preview", "VIP", "--demo", "--limit", "2"])
    assert preview.exit_code == 0 and f"VIP: {segments['VIP']} member(s)" in preview.output
    listing = runner.invoke(app, ["segments", "--demo"])
    assert "High-Value Customers" in listing.output
    engine.dispose()


def test_demo_events_go_through_the_intake_and_change_the_person_s_tags(in_tmp: Path) -> None:
    """`demo --events` posts a visitor's views, login (identify) and add to cart to the event
    intake over HTTP; the next cycle stitches them to the person and the rules react."""
    from syncbridge import views
    from syncbridge.demo import EVENTS_PERSON

    result = runner.invoke(app, ["demo", "--events"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert re.search(r"POST http://127\.0\.0\.1:\d+/v1/batch, 4 events: 200", result.output)
    engine = open_engine(f"sqlite:///{in_tmp / DEMO_DB}")
    profile = views.find_profile(engine, EVENTS_PERSON, events=0)
    assert profile is not None and profile.rules is not None
    assert {"Added_to_Cart", "Cart_Abandoned"} <= set(profile.rules["tags"])
    assert "Viewed 24h, cart over 100" in profile.rules["segments"]
    assert "Inactive subscribers" not in profile.rules["segments"]
    again = runner.invoke(app, ["demo", "--events"], terminal_width=200)
    assert again.exit_code == 0, again.output  # the same messageIds: stored once
    with engine.connect() as conn:
        from sqlalchemy import text

        stored = conn.execute(text("SELECT count(*) FROM source_record WHERE source = 'site'"))
        assert stored.scalar_one() == 4
    engine.dispose()
