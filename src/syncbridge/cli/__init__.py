"""The `syncbridge` command: parse arguments, call one stage, print the result."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape

from .. import demo as demo_module
from .. import render
from ..bundled import data_dir, example_config
from ..config.loader import Settings, StreamKey
from ..daemon import DaemonOptions, run_daemon
from ..errors import CacheBusyError, ConfigError, FatalError, SyncbridgeError
from ..logs import log_context, setup_logging
from ..pipeline import (
    CycleReport,
    ProgressHook,
    run_cycle,
    select_streams,
)
from ..progress import progress_display
from ..push.sync import PushReport
from ..redaction import redact
from ..settings import check_connections, load_settings
from ..store.engine import open_engine
from ..store.failures import store_failure
from ..store.writer_lock import writer_lock

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
db_app = typer.Typer(no_args_is_help=True, help="Manage the profile cache's schema.")
profiles_app = typer.Typer(no_args_is_help=True, help="Look at resolved profiles.")
connectors_app = typer.Typer(no_args_is_help=True, help="Installed connectors.")
segments_app = typer.Typer(help="Segments from the rules: counts, and previews of members.")
app.add_typer(db_app, name="db")
app.add_typer(profiles_app, name="profiles")
app.add_typer(connectors_app, name="connectors")
app.add_typer(segments_app, name="segments")

out = Console()
err = Console(stderr=True)
log = logging.getLogger("syncbridge")


def _flags_without_a_type() -> None:
    """typer 0.29 shows every on/off option with its type (`--once <bool>`, `--help <bool>`),
    as if it took a value. Show flags bare, as every other CLI does (tests/test_cli_help.py
    checks every command's help, so a typer that changes this is noticed)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_bool_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_a_type()

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="SYNCBRIDGE_CONFIG", help="Path to config.toml."),
]


class _State:
    log_format: str | None = None
    log_level: str | None = None
    store_url: str | None = None
    """The cache in use, to name it when its surroundings fail (see `_guard`)."""
    json_logs: bool = False
    """Logging in JSON: the human tables are suppressed and errors are log lines."""


state = _State()


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"syncbridge {version('syncbridge')}", highlight=False)
        except PackageNotFoundError:  # run from a source tree without installing
            out.print("syncbridge (not installed)")
        raise typer.Exit()


@app.callback()
def main_options(
    log_format: Annotated[
        Literal["text", "json"] | None,
        typer.Option("--log-format", help="How log lines look (overrides the config)."),
    ] = None,
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None,
        typer.Option(
            "--log-level",
            help="The least severe lines shown (overrides the config).",
            case_sensitive=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """syncbridge keeps Mailchimp audiences in step with your CRM, shop and site: it pulls
    Salesforce, SQL databases, Shopify and other exports, site events and an event bus into a
    local profile cache,
    merges each person's records into one profile, computes traits, behaviour tags and
    segments, and pushes merge fields and tags to Mailchimp for your campaigns.

    Start with: `syncbridge demo` (sample data, no credentials) · `syncbridge init` (a config
    of your own) · `syncbridge validate` · `syncbridge run --once` · `syncbridge plan` (what a
    push would send) · `syncbridge daemon` (run as a service).

    `--log-format` and `--log-level` may also follow the command (`run --once --log-format
    json`)."""
    if log_level is not None:
        log_level = log_level.upper()  # type: ignore[assignment]
    state.log_format, state.log_level = log_format, log_level
    _set_logging(log_level or "INFO", log_format or "text")


def _set_logging(level: str, fmt: str) -> None:
    """Logging as asked. In JSON mode the tables for people are suppressed unless stdout is a
    terminal (someone is reading), so that under a service manager or in a pipe stdout holds
    only machine output (`--json`) and stderr only JSON log lines."""
    setup_logging(level, fmt)
    state.json_logs = fmt == "json"
    out.quiet = state.json_logs and not _stdout_is_terminal()


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def _settings(config: Path) -> Settings:
    settings = load_settings(config)
    state.store_url = settings.config.store.url
    logging_config = settings.config.logging
    _set_logging(state.log_level or logging_config.level, state.log_format or logging_config.format)
    return settings


@contextmanager
def _progress() -> Iterator[ProgressHook | None]:
    """The live display on a terminal, log lines otherwise (`progress.py`)."""
    with progress_display(err, plain=not err.is_terminal or state.log_format == "json") as hook:
        yield hook


def _fail(exc: BaseException, code: int = 1) -> typer.Exit:
    if state.json_logs:  # one JSON line, like every other line on stderr
        problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else []
        extra: dict[str, Any] = {"exit_code": code, **({"problems": problems} if problems else {})}
        log.error("%s", exc, extra=extra)
        return typer.Exit(code)
    if isinstance(exc, ConfigError):
        err.print(f"[red]Configuration has {len(exc.problems)} problem(s):[/red]")
        for problem in exc.problems:
            err.print(f"  - {redact(str(problem))}", markup=False, highlight=False, soft_wrap=True)
    else:
        err.print(f"[red]error:[/red] {redact(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


BUSY_ADVICE = "try again later, or pass --wait SECONDS to wait for it"
DAEMON_ADVICE = (
    "a daemon keeps the cache for as long as it runs: stop it first, or ask it to pull a "
    "source now with POST /v1/admin/run/SOURCE"
)
PLAN_CHECK_TIMEOUT_S = 5.0
"""`plan`'s read-only look at Mailchimp: one try with this timeout, never the push's retries."""

WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait for another process's writer lock on the cache "
        "(default 0: exit at once with code 75).",
    ),
]


@contextmanager
def _guard(busy_advice: str = BUSY_ADVICE) -> Iterator[None]:
    """One line instead of a traceback for syncbridge's own errors and for failures of the
    cache's surroundings; a busy cache exits with 75 (EX_TEMPFAIL). Unknown errors pass."""
    try:
        yield
    except CacheBusyError as exc:
        advice = DAEMON_ADVICE if exc.by_daemon else busy_advice
        raise _fail(FatalError(f"{exc}; {advice}"), exc.exit_code) from None
    except SyncbridgeError as exc:
        raise _fail(exc) from None
    except Exception as exc:
        failure = store_failure(exc, state.store_url)
        if failure is None:
            raise
        raise _fail(failure) from None


def _cycle(
    settings: Settings,
    now: datetime | None = None,
    full_refresh: list[StreamKey] | None = None,
    allow_mass_removal: bool = False,
) -> CycleReport:
    engine = open_engine(settings.config.store.url, settings.config.store.echo)
    with _progress() as hook:
        return run_cycle(
            settings, engine, hook, now=now, full_refresh=full_refresh or (),
            allow_mass_removal=allow_mass_removal,
        )  # fmt: skip


def _print_cycle(report: CycleReport) -> None:
    out.print(render.cycle_table(report))
    for line in render.remap_lines(report):
        out.print(line, highlight=False)
    out.print(render.identity_table(report))
    if report.push is not None:
        _print_push(report.push)
    elif report.push_skipped:
        out.print(f"Push skipped: {report.push_skipped}.", highlight=False, markup=False)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the starter files.")] = Path(),
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Write a starter config.toml, the default mappings and the sample exports."""
    targets = {directory / "config.toml": example_config()}
    for sub in ("mappings", "examples"):
        source_dir = data_dir(sub)
        for path in sorted(source_dir.rglob("*")):
            if path.is_file() and path.suffix in (".toml", ".csv", ".jsonl", ".md"):
                targets[directory / sub / path.relative_to(source_dir)] = path
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        err.print(f"[red]not overwriting existing files[/red] (use --force): {', '.join(existing)}")
        raise typer.Exit(1)
    for target, source in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    out.print(f"Wrote {len(targets)} files into {directory.resolve()}.")
    out.print("Next: edit config.toml, then `syncbridge validate` and `syncbridge run --once`.")


@app.command()
def validate(
    config: ConfigOption = Path("config.toml"),
    connect: Annotated[
        bool,
        typer.Option(
            "--connect", help="Also sign in to every source (read-only) to check its credentials."
        ),
    ] = False,
) -> None:
    """Check the config and every mapping file; list all problems."""
    try:
        settings = load_settings(config)
    except (ConfigError, FatalError) as exc:
        raise _fail(exc) from None
    for warning in settings.warnings:
        out.print(f"[yellow]warning[/yellow]: {escape(redact(str(warning)))}", highlight=False)
    streams = sum(len(s.streams) for s in settings.config.sources)
    out.print(
        f"[green]OK[/green]: {config} with {len(settings.config.sources)} source(s), "
        f"{streams} stream(s), {len(settings.mappings)} mapping(s)."
    )
    if connect:
        failures = check_connections(settings)
        for name, failure in failures.items():
            if failure is None:
                out.print(
                    f"[green]OK[/green]: source {escape(repr(name))} answered", highlight=False
                )
            else:
                text = escape(redact(f"source {name!r}: {failure}"))
                err.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)
        if any(failures.values()):
            raise typer.Exit(1)


AllowMassRemoval = Annotated[
    bool,
    typer.Option(
        "--allow-mass-removal",
        help="Apply a push even if it archives or untags more than max_removal_share.",
    ),
]


StreamsArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="SOURCE[/STREAM]", help="With --full-refresh: the streams to re-read."),
]


@app.command()
def run(
    streams: StreamsArgument = None,
    config: ConfigOption = Path("config.toml"),
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
    every: Annotated[
        int | None,
        typer.Option(
            help="`syncbridge daemon`, pulling sources without a schedule every N s.", min=5
        ),
    ] = None,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Forget the saved cursors and file fingerprints of the named streams (none "
            "named: every stream) and read them from scratch in the (first) cycle.",
        ),
    ] = False,
    allow_mass_removal: AllowMassRemoval = False,
    wait: WaitOption = None,
) -> None:
    """Run the pipeline: one cycle with --once; otherwise this is `syncbridge daemon` (with
    --every N: N seconds as the default schedule).

    --once holds the cache's writer lock for the cycle and exits with 75 when another process
    holds it (after --wait seconds), or with 2 when that process is a daemon."""
    if streams and not full_refresh:
        raise typer.BadParameter(
            f"{' '.join(streams)}: stream names go with --full-refresh", param_hint="SOURCE/STREAM"
        )
    with log_context(job="run"), _guard():
        settings = _settings(config)
        refresh = select_streams(settings, streams or []) if full_refresh else None
        if once:
            with writer_lock(settings.config.store.url, "run --once", wait or 0.0):
                report = _cycle(
                    settings, full_refresh=refresh, allow_mass_removal=allow_mass_removal
                )
            _print_cycle(report)
            return
        schedule = f"{every}s" if every is not None else None
        options = DaemonOptions(wait or 0.0, refresh or [], allow_mass_removal, schedule)
        run_daemon(settings, options)


@app.command()
def daemon(
    streams: StreamsArgument = None,
    config: ConfigOption = Path("config.toml"),
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="The first pull of the named streams (none named: every stream) reads them "
            "from scratch.",
        ),
    ] = False,
    allow_mass_removal: AllowMassRemoval = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            help="Seconds to wait at start for a one-off command "
            "holding the cache (default 0: exit at once with code 75).",
        ),
    ] = 0.0,
) -> None:
    """Run as a service: each source on its schedule, the journal's consumers as soon as it
    has work, a health/metrics/admin HTTP server; SIGTERM stops, SIGHUP reloads.

    Holds the cache for its whole life: on SQLite a second daemon (or `run --once`) exits
    with 2; on PostgreSQL several daemons share the jobs by leases."""
    if streams and not full_refresh:
        raise typer.BadParameter(
            f"{' '.join(streams)}: stream names go with --full-refresh", param_hint="SOURCE/STREAM"
        )
    with _guard():
        settings = _settings(config)
        refresh = select_streams(settings, streams or []) if full_refresh else None
        run_daemon(settings, DaemonOptions(wait, refresh or [], allow_mass_removal))


DemoOption = Annotated[
    bool, typer.Option("--demo", help="Look at the demo's cache instead of the config's.")
]


def _engine(config: Path, demo: bool) -> Any:
    if demo:
        state.store_url = f"sqlite:///{Path(demo_module.DEMO_DB).resolve()}"
        return open_engine(state.store_url)
    return open_engine(_settings(config).config.store.url)


def _json_text(text: str) -> None:
    """Machine output on stdout, whatever the log format (in JSON mode `out` is quiet)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _json_lines(rows: list[dict[str, Any]]) -> None:
    """Machine output: one JSON object per line on stdout, whatever the log format."""
    for row in rows:
        sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _print_push(result: PushReport) -> None:
    for a in result.audiences:
        applied = ", ".join(f"{k}: {v}" for k, v in sorted(a.applied.items())) or "no changes"
        out.print(f"Pushed to audience {a.audience}: {applied}; read back {a.read_back} member(s)")
        if a.created_fields:
            out.print(f"  created merge fields: {', '.join(a.created_fields)}")
        if a.created_tags:
            out.print(f"  created tags: {', '.join(a.created_tags)}")
        for email, message in a.errors[:10]:
            out.print(f"  [yellow]refused[/yellow] {email}: {message}", highlight=False)
        if len(a.errors) > 10:
            out.print(f"  … {len(a.errors) - 10} more refusals (see syncbridge status)")


GLOBAL_OPTIONS = ("--log-format", "--log-level")


def global_options_first(argv: list[str]) -> list[str]:
    """The arguments with `--log-format X` / `--log-level X` moved before the command, where
    the parser takes them, wherever the user typed them (`run --once --log-format json`)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in GLOBAL_OPTIONS and i + 1 < len(argv):
            front += argv[i : i + 2]
            i += 2
            continue
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS and "=" in arg:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main() -> None:
    """Console-script entry point."""
    try:
        app(args=global_options_first(sys.argv[1:]), prog_name="syncbridge")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # a bug: say so, with a traceback that has secrets masked
        import traceback

        err.print(redact(traceback.format_exc()), markup=False, highlight=False)
        err.print(
            "[red]syncbridge failed unexpectedly; please report this with the text above.[/red]"
        )
        sys.exit(1)


# The commands of the other modules register themselves on `app` (they import from here).
from . import demo_command, inspect_commands, mailchimp_commands  # noqa: E402, F401
