"""`syncbridge demo`: the pipeline on the bundled sample data, and `--events` through the intake."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import demo as demo_module
from .. import render, views
from ..config.loader import Settings
from ..rules.compute import explain as explain_results
from ..store.engine import open_engine
from ..store.writer_lock import writer_lock
from . import WaitOption, _cycle, _guard, _print_cycle, _print_push, app, out, state
from .mailchimp_commands import _print_plans


@app.command()
def demo(
    reset: Annotated[bool, typer.Option("--reset", help="Start from an empty demo cache.")] = False,
    db: Annotated[Path, typer.Option(help="The demo's SQLite file.")] = Path(demo_module.DEMO_DB),
    audience: Annotated[
        str | None,
        typer.Option(help="Push the sample data into this audience (key: $MAILCHIMP_API_KEY)."),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            help="Evaluate time windows as of this time (default: the "
            "sample data's export date, 2026-11-23).",
        ),
    ] = None,
    wait: WaitOption = None,
    events: Annotated[
        bool,
        typer.Option(
            "--events",
            help="Then post a visitor's page views and add to cart through the event intake "
            "(Segment's HTTP API, on a local port) and show their tags change.",
        ),
    ] = False,
) -> None:
    """Run the pipeline on the bundled sample exports (no credentials, no network), ending with
    the Mailchimp dry-run plan; with --audience, push it to a test audience of yours."""
    env = {k: v for k, v in os.environ.items() if k == "MAILCHIMP_API_KEY"
           or k.startswith("SYNCBRIDGE_MAILCHIMP__")}  # fmt: skip
    with _guard():
        settings = demo_module.demo_settings(db.resolve(), env, audience, events)
        state.store_url = settings.config.store.url
        with writer_lock(state.store_url, "demo", wait or 0.0):
            if reset:
                demo_module.reset(db)
            fresh = not db.exists()
            moment = as_of or demo_module.SAMPLE_DATE
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            how = "new cache" if fresh else "continuing from the previous run; --reset starts over"
            # before the live display, which then reads as this run's progress
            out.print(f"[bold]syncbridge demo[/bold] into {db} ({how})")
            report = _cycle(settings, moment)
            followed = _events_part(settings, moment) if events else None
    _print_cycle(report)
    engine = open_engine(settings.config.store.url)
    view = views.status(engine, errors=8)
    p = view.profiles
    spread = views.source_spread(engine)
    several = sum(n for sources, n in spread.items() if sources >= 2)
    out.print(
        f"Cache now holds {p['live']} live profiles; {several} of them joined records from "
        f"2+ sources ({', '.join(f'{n} from {k}' for k, n in sorted(spread.items()))}); "
        f"{p['merges']} merges of existing profiles so far."
    )
    if view.recent_errors:
        out.print(render.errors_table(view.recent_errors, "Sample record errors (kept, not lost)"))
    example = views.most_merged_email(engine)
    if example:
        out.print(f"\nThe profile built from the most sources: {example}")
        view_profile = views.find_profile(engine, example, events=5)
        if view_profile is not None:
            why = (
                explain_results(settings.rules, view_profile.rules or {})
                if settings.rules
                else None
            )
            out.print(render.profile_group(view_profile, max_records=8, explain=why))
    segments = views.segment_counts(engine)
    if settings.rules is not None:
        counts = {s.name: 0 for s in settings.rules.segments} | segments
        out.print(render.counts_table("Segments (as of the sample date)", counts, "segment"))
        out.print(render.counts_table("Behaviour tags", views.tag_counts(engine), "tag"))
    if report.push is not None:
        _print_push(report.push)
    else:
        out.print("\n[bold]Mailchimp dry run[/bold] (no credentials: nothing is sent)")
        _print_plans(settings, engine, None)
    if followed is not None:
        _print_events_part(*followed)
    out.print("More: syncbridge profiles show EMAIL --demo · syncbridge status --demo")


def _events_part(settings: Settings, moment: datetime) -> tuple[Any, ...]:
    """`demo --events`: the followed person's tags, the events posted, another cycle, the tags."""
    engine = open_engine(settings.config.store.url)
    email = demo_module.EVENTS_PERSON
    before = _tags_and_segments(engine, email)
    body = demo_module.demo_events(moment)
    url, status = demo_module.post_events(settings, engine, body)
    report = _cycle(settings, moment)
    return email, body["batch"], url, status, before, _tags_and_segments(engine, email), report


def _tags_and_segments(engine: Any, email: str) -> tuple[list[str], list[str], str | None]:
    found = views.find_profile(engine, email, events=0)
    rules = (found.rules or {}) if found is not None else {}
    content = rules.get("content") or {}
    return (
        sorted(rules.get("tags") or []),
        sorted(rules.get("segments") or []),
        (content.get("headline") if isinstance(content, dict) else None),
    )


def _print_events_part(
    email: str, batch: list[dict[str, Any]], url: str, status: int,
    before: tuple[Any, ...], after: tuple[Any, ...], report: Any,
) -> None:  # fmt: skip
    out.print(
        f"\n[bold]Events through the intake[/bold]: POST {url}, {len(batch)} events: {status}"
    )
    for message in batch:
        what = message.get("event") or message["type"]
        who = message.get("traits", {}).get("email") or message.get("anonymousId")
        out.print(f"  {message['timestamp']}  {what:<15} {who}", highlight=False)
    _print_cycle(report)
    rows = [("tags", before[0], after[0]), ("segments", before[1], after[1]),
            ("headline", [before[2] or "—"], [after[2] or "—"])]  # fmt: skip
    table = Table(title=f"{email} before and after the events")
    for column in ("", "before", "after"):
        table.add_column(column)
    for name, was, now in rows:
        added = [f"[green]{t}[/green]" if t not in was else t for t in now]
        table.add_row(name, ", ".join(was) or "—", ", ".join(added) or "—")
    out.print(table)
