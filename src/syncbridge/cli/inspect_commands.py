"""The read-only commands: status, runs, errors, profiles, segments, connectors, and db upgrade."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import demo as demo_module
from .. import lookup, render, runlog, views
from ..config.loader import Settings
from ..connectors import available_connectors, build_connector
from ..daemon import status as daemon_status
from ..errors import FatalError, SyncbridgeError
from ..pipeline import declared_tags
from ..push.chunks import Planner, list_chunks
from ..rules.compute import explain as explain_results
from ..store.engine import create_store_engine
from ..store.migrate import current_revision, upgrade
from ..store.writer_lock import writer_lock
from . import (
    ConfigOption,
    DemoOption,
    WaitOption,
    _engine,
    _fail,
    _guard,
    _json_lines,
    _json_text,
    _settings,
    app,
    connectors_app,
    db_app,
    err,
    out,
    profiles_app,
    segments_app,
)


@app.command()
def status(
    config: ConfigOption = Path("config.toml"),
    demo: DemoOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print it all as one JSON object.")
    ] = False,
) -> None:
    """The cache's writer (if a run holds it), last runs, records and errors per stream,
    cursors, profile counts, each journal consumer's offset and lag, and the daemon's jobs."""
    with _guard():
        engine = _engine(config, demo)
        view = views.status(engine)
        jobs = daemon_status.jobs(engine)
    if as_json:
        whole = dataclasses.asdict(view) | {"jobs": jobs}
        _json_text(json.dumps(whole, default=str, ensure_ascii=False, indent=2))
        return
    out.print(render.status_group(view))
    if jobs:
        out.print(daemon_status.jobs_table(jobs))


@app.command()
def runs(
    config: ConfigOption = Path("config.toml"),
    demo: DemoOption = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
) -> None:
    """Recent runs: when, how long, the outcome, counts per stage and why a run failed."""
    with _guard():
        rows = runlog.recent_runs(_engine(config, demo), limit)
    if as_json:
        _json_lines(rows)
        return
    if not rows:
        out.print("No run yet: `syncbridge run --once` makes the first.")
        return
    out.print(render.runs_table(rows))


@app.command()
def errors(
    config: ConfigOption = Path("config.toml"),
    demo: DemoOption = False,
    source: Annotated[str | None, typer.Option(help="Only this source's errors.")] = None,
    stream: Annotated[
        str | None, typer.Option(help="Only this stream's (its name, or SOURCE/STREAM).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Kept since: a duration back from now (1h, 30m, 2d) or an ISO date."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
) -> None:
    """Per-record errors kept by ingestion (values that did not clean, broken rows), newest
    first: where (stream, record, field), the value and why."""
    try:
        moment = runlog.parse_since(since) if since is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    filters = runlog.ErrorFilter(source=source, stream=stream, since=moment, limit=limit)
    with _guard():
        rows, more = runlog.record_errors(_engine(config, demo), filters)
    if as_json:
        _json_lines(rows)
        return
    if not rows:
        out.print("No record error matches these filters.")
        return
    out.print(render.record_errors_table(rows, f"Record errors ({len(rows)}{'+' if more else ''})"))
    if more:
        out.print(f"More errors match: --limit {limit * 5} shows more.", highlight=False)


@profiles_app.command("show")
def profiles_show(
    query: Annotated[
        str,
        typer.Argument(
            help="An email (also an invalid one), a phone, an external id such as "
            "shopify:customer:7101116718867, a record key source/stream/key, or #123 / id:123."
        ),
    ],
    config: ConfigOption = Path("config.toml"),
    demo: DemoOption = False,
) -> None:
    """The resolved profile QUERY names: attributes and their sources, identifiers, events.
    When several profiles match (an invalid email is no join key), lists them."""
    with _guard():
        engine = _engine(config, demo)
        matches = lookup.find_profiles(engine, query, _phone_region(config, demo))
        ids = matches.ids
        if len(ids) == 1:
            view = views.profile_view(engine, ids[0])
        elif ids:
            rows = lookup.summaries(engine, ids)
        else:
            suggestion = lookup.suggest_email(engine, query) if "@" in query else None
    if not ids:
        kinds = " or ".join(matches.kinds)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        err.print(f"no profile matches {query!r} (looked up as {kinds}){hint}", highlight=False)
        raise typer.Exit(1)
    if len(ids) > 1:
        for row in rows:
            row["matched"] = matches.found[row["id"]]
        out.print(render.profiles_table(f"Profiles matching {query!r}", rows, matched=True))
        out.print(
            f"{len(ids)} profiles match; show one with `profiles show id:{ids[0]}`",
            highlight=False,
        )
        return
    out.print(render.profile_group(view, explain=_explanations(config, demo, view)))


@profiles_app.command("list")
def profiles_list(
    config: ConfigOption = Path("config.toml"),
    demo: DemoOption = False,
    source: Annotated[str | None, typer.Option(help="Holding a record from this source.")] = None,
    segment: Annotated[str | None, typer.Option(help="A current member of this segment.")] = None,
    tag: Annotated[str | None, typer.Option(help="Carrying this behaviour tag.")] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE: the attribute equals VALUE (text, true/false, a number)."),
    ] = None,
    has_errors: Annotated[bool, typer.Option(help="With record errors kept.")] = False,
    invalid_email: Annotated[bool, typer.Option(help="Whose email is not valid.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
) -> None:
    """Live profiles passing every filter given, by id: a first look at the cache."""
    try:
        pairs = tuple(lookup.parse_attribute_filter(a) for a in attribute or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    filters = lookup.ProfileFilter(
        source=source, segment=segment, tag=tag, attributes=pairs, has_errors=has_errors,
        invalid_email=invalid_email, limit=limit,
    )  # fmt: skip
    with _guard():
        rows, more = lookup.list_profiles(_engine(config, demo), filters)
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        out.print("No profile matches these filters.")
        return
    out.print(render.profiles_table(f"Profiles ({len(rows)}{'+' if more else ''})", rows))
    if more:
        out.print(f"More profiles match: --limit {limit * 5} shows more.", highlight=False)


def _phone_region(config: Path, demo: bool) -> str | None:
    settings = (
        demo_module.demo_settings(Path(demo_module.DEMO_DB).resolve()) if demo
        else _settings(config)
    )  # fmt: skip
    return settings.config.identity.default_phone_region


def _explanations(config: Path, demo: bool, view: views.ProfileView) -> dict[str, str]:
    """The rule behind each of the profile's results, from the rules file in use."""
    if view.rules is None:
        return {}
    try:
        settings = (
            demo_module.demo_settings(Path(demo_module.DEMO_DB).resolve()) if demo
            else _settings(config)
        )  # fmt: skip
    except SyncbridgeError:
        return view.rules.get("explain") or {}
    if settings.rules is None:
        return view.rules.get("explain") or {}
    return explain_results(settings.rules, view.rules)


def _segment_names(config: Path, demo: bool) -> list[str]:
    """Configured segment names (so that empty segments are listed too)."""
    settings = _preview_settings(config, demo)
    return [s.name for s in settings.rules.segments] if settings.rules else []


def _preview_settings(config: Path, demo: bool) -> Settings:
    if demo:
        return demo_module.demo_settings(Path(demo_module.DEMO_DB).resolve())
    return _settings(config)


@segments_app.callback(invoke_without_command=True)
def segments_list(
    ctx: typer.Context, config: ConfigOption = Path("config.toml"), demo: DemoOption = False
) -> None:
    """List segments with their member counts."""
    if ctx.invoked_subcommand is not None:
        return
    with _guard():
        engine = _engine(config, demo)
        names = _segment_names(config, demo)
        counts = {name: 0 for name in names} | views.segment_counts(engine)
    out.print(render.counts_table("Segments", counts, "segment"))


@segments_app.command("preview")
def segments_preview(
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    config: ConfigOption = Path("config.toml"),
    demo: DemoOption = False,
    limit: Annotated[int, typer.Option(help="How many sample members.")] = 10,
) -> None:
    """Count and sample members of a segment, from the cache (nothing is pushed)."""
    with _guard():
        engine = _engine(config, demo)
        names = _segment_names(config, demo)
    if name not in names:
        err.print(f"no segment {name!r}; known: {', '.join(names) or 'none'}")
        raise typer.Exit(1)
    count = views.segment_counts(engine).get(name, 0)
    out.print(f"[bold]{name}[/bold]: {count} member(s)")
    sample = views.segment_sample(engine, name, limit)
    for member in sample:
        traits = ", ".join(f"{k}={v}" for k, v in list(member["traits"].items())[:4])
        out.print(f"  {member['email'] or '(no email)'}  {member['first_name'] or ''}  {traits}",
                  highlight=False)  # fmt: skip
    settings = _preview_settings(config, demo)
    for audience in settings.config.mailchimp.audiences:
        _print_merge_preview(engine, audience, [m["id"] for m in sample], declared_tags(settings))


def _print_merge_preview(engine: Any, audience: Any, ids: list[int], declared: Any) -> None:
    """What these members would get in the audience: their merge fields and tags, a line each
    (readable at any terminal width)."""
    if not ids:
        return
    desired = Planner(engine, audience, list_chunks(ids), declared).desired(ids)
    out.print(f"What they would get in audience {audience.name} (merge fields; tags):")
    for pid in ids:
        member = desired.get(pid)
        if member is None:
            out.print("  (not in this audience: no valid email, or outside its segment)")
            continue
        fields = ", ".join(f"{tag}={value}" for tag, value in member.merge_fields.items())
        tags = ", ".join(sorted(member.tags)) or "no tags"
        out.print(f"  {member.email}: {fields}; {tags}", highlight=False, markup=False)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = Path("config.toml"), wait: WaitOption = None) -> None:
    """Apply pending schema migrations to the cache (under the writer lock)."""
    with _guard():
        settings = _settings(config)
        engine = create_store_engine(settings.config.store.url)
        with writer_lock(settings.config.store.url, "db upgrade", wait or 0.0):
            applied = upgrade(engine)
    state_text = "upgraded to" if applied else "already at"
    out.print(f"Schema {state_text} revision {current_revision(engine)}.")


@connectors_app.command("list")
def connectors_list() -> None:
    """Connectors installed (built-in and from the `syncbridge.connectors` entry points)."""
    for name, cls in sorted(available_connectors().items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        out.print(f"{name:12} {cls.__module__}.{cls.__name__}  {doc[0] if doc else ''}")


@connectors_app.command("describe")
def connectors_describe(
    source: Annotated[str, typer.Argument(help="A source name from the config, or a connector.")],
    obj: Annotated[str, typer.Argument(help="The object or stream to describe, e.g. Contact.")],
    config: ConfigOption = Path("config.toml"),
) -> None:
    """List an object's fields as the source describes them (to help write mappings)."""
    try:
        settings = _settings(config)
        sources = settings.config.sources
        match = next((s for s in sources if s.name == source), None) or next(
            (s for s in sources if s.connector == source), None
        )
        if match is None:
            raise FatalError(f"no source or connector {source!r} in {config}")
        connector = build_connector(match, settings.config.base_dir)
        describe = getattr(connector, "describe", None)
        if describe is None:
            raise FatalError(f"the {match.connector} connector cannot describe objects")
        fields = describe(obj)
    except SyncbridgeError as exc:
        raise _fail(exc) from None
    out.print(render.fields_table(f"{match.name}: {obj}", fields))
