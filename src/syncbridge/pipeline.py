"""One cycle of syncbridge: pull every stream, resolve identities, evaluate rules, push.

Before the pull, streams whose mapping was edited have their stored records re-mapped
(`remap.py`), and streams named for a full refresh forget their saved position. Each stage
reads what the previous one wrote to the cache (its change journal): without a rules file the
push reads identity's entries directly, and the push runs only when audiences are configured.
Every cycle is recorded as a run. The CLI's `run --once` and the demo call `run_cycle`; the
daemon (`daemon/`) runs the same stages as jobs of their own, from the pieces here.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, insert, update

from . import metrics
from .config.loader import Settings, StreamKey
from .connectors import build_connector
from .errors import FatalError
from .identity import ResolveStats, resolve_pending
from .ingest import StreamIngest, StreamsFailed, StreamStats, forget_cursors, ingest_streams
from .logs import log_context
from .push.client import MailchimpClient
from .push.sync import PushReport, destination_name, push
from .remap import RemapStats, remap_changed_mappings
from .rules.stage import RulesStats, hand_over, run_rules
from .store import journal
from .store.bulk import utcnow
from .store.tables import Run
from .transform import RecordTransformer

log = logging.getLogger(__name__)
RUNS = Run.__table__


class ProgressHook(Protocol):
    """Called with (label, count just done) after every committed page or pushed batch; a
    stream's pages also say how much of the read is done (`share`, 0 to 1) and how many records
    it will yield (`expected`), when its connector can tell."""

    def __call__(
        self, label: str, n: int, *, share: float | None = None, expected: int | None = None
    ) -> None: ...


NO_API_KEY = (
    "no Mailchimp API key (set MAILCHIMP_API_KEY or [mailchimp] api_key); "
    "`syncbridge plan` shows what a push would send"
)


@dataclass
class CycleReport:
    run_id: int
    streams: dict[str, StreamStats] = field(default_factory=dict)
    remaps: dict[str, RemapStats] = field(default_factory=dict)
    """Streams whose mapping changed: their stored records were re-mapped."""
    resolve: ResolveStats = field(default_factory=ResolveStats)
    rules: RulesStats | None = None
    push: PushReport | None = None
    seconds: float = 0.0
    status: str = "ok"
    compacted: int = 0
    """Journal entries every consumer had read, deleted at the end of the cycle."""
    push_skipped: str | None = None
    """Why audiences are configured but nothing was pushed (no API key): said, not silent."""

    @property
    def totals(self) -> StreamStats:
        total = StreamStats()
        for stats in self.streams.values():
            total.add(stats)
        return total

    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "streams": {k: v.as_dict() for k, v in self.streams.items()},
            "totals": self.totals.as_dict(),
            "identity": self.resolve.as_dict(),
        }
        if self.remaps:
            counts["remapped"] = {k: v.as_dict() for k, v in self.remaps.items()}
        if self.rules is not None:
            counts["rules"] = self.rules.as_dict()
        if self.push is not None:
            counts["push"] = {
                a.audience: {"applied": a.applied, "errors": len(a.errors)}
                for a in self.push.audiences
            }
        return counts


def stream_jobs(
    settings: Settings,
    run_id: int | None = None,
    progress: ProgressHook | None = None,
    only: str | None = None,
) -> dict[str, StreamIngest]:
    """An ingest job for every stream of every enabled source (or of source `only`, as the
    daemon pulls one source per job), by "source/stream"."""
    config = settings.config
    jobs: dict[str, StreamIngest] = {}
    for source in config.sources:
        if not source.enabled or (only is not None and source.name != only):
            continue
        for stream in build_connector(source, config.base_dir).streams():
            key = StreamKey(source.name, stream.name)
            transformer = RecordTransformer(
                settings.mappings[key], config.identity.default_phone_region
            )
            hook = _page_hook(progress, f"{key} records read") if progress else None
            jobs[str(key)] = StreamIngest(
                source.name, stream, transformer, run_id, hook, config.ingest.parallel
            )
    return jobs


def consumers_of(settings: Settings, pushing: bool) -> list[str]:
    """The journal's consumers in this setup, in pipeline order: what compaction waits for.
    Destinations count only when they run (with no API key they read nothing; a first pass
    takes every profile, so entries from before it are not needed)."""
    names = [journal.IDENTITY_CONSUMER]
    if settings.rules is not None:
        names.append(journal.RULES_CONSUMER)
    if pushing:
        names += [destination_name(a) for a in settings.config.mailchimp.audiences]
    return names


def declared_tags(settings: Settings) -> tuple[str, ...]:
    """The tag names the rules declare: segments, and behaviour tags without a `{property}`
    (those make one tag per value, known only from the data)."""
    if settings.rules is None:
        return ()
    names = [s.name for s in settings.rules.segments]
    names += [t.name for t in settings.rules.tags if "{" not in t.name]
    return tuple(names)


STAGE = "stage: "
"""A progress label that starts with this says the cycle moved on to a stage (count 0): a
live display stops the earlier counts' spinners and shows the stage instead."""


def _page_hook(
    progress: ProgressHook, label: str
) -> Callable[[int, float | None, int | None], None]:
    def tell(n: int, share: float | None, expected: int | None) -> None:
        progress(label, n, share=share, expected=expected)

    return tell


def _stage_started(progress: ProgressHook | None, what: str) -> None:
    if progress is not None:
        progress(STAGE + what, 0)


def push_upstream(settings: Settings) -> str:
    """The journal kind that tells destinations a desired member may have changed: the rules'
    entries when a rules file is configured (they follow evaluation), else identity's."""
    return journal.RULES if settings.rules is not None else journal.PROFILE


def _log_stage(stage: str, counts: dict[str, Any]) -> None:
    """A stage's counts at DEBUG, as the run log stores them (numbers only: no emails), as
    fields of the line (`stage`, `counts`)."""
    log.debug("stage %s done", stage, extra={"stage": stage, "counts": counts})


def _summary(report: CycleReport) -> dict[str, Any]:
    """A run's counts in brief for its log line: stream totals, then per stage."""
    summary: dict[str, Any] = {"records": report.totals.as_dict(),
                               "identity": report.resolve.as_dict()}  # fmt: skip
    if report.rules is not None:
        summary["rules"] = report.rules.as_dict()
    if report.push is not None:
        summary["push"] = _push_counts(report.push)
    return summary


def _push_counts(report: PushReport) -> dict[str, Any]:
    """Per audience: planned and applied operations, members read back, errors (counted, as
    their text names members)."""
    return {
        a.audience: {"planned": a.planned, "applied": a.applied, "read_back": a.read_back,
                     "errors": len(a.errors)}
        for a in report.audiences
    }  # fmt: skip


def start_run(engine: Engine) -> int:
    """A new run row. Runs still marked running belong to a process that died (a SIGKILL, a
    power cut): only one writer holds the cache at a time, so they become `interrupted`."""
    with engine.begin() as conn:
        conn.execute(
            update(RUNS)
            .where(RUNS.c.status == "running")
            .values(status="interrupted", finished_at=utcnow(), message="the process ended mid-run")
        )
        return conn.execute(
            insert(RUNS).returning(RUNS.c.id),
            {"started_at": utcnow(), "status": "running", "counts": {}},
        ).scalar_one()


def finish_run(engine: Engine, report: CycleReport, message: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(RUNS)
            .where(RUNS.c.id == report.run_id)
            .values(
                finished_at=utcnow(), status=report.status, counts=report.counts(), message=message
            )
        )


def select_streams(settings: Settings, names: Collection[str]) -> list[StreamKey]:
    """The enabled streams that `names` ("SOURCE" or "SOURCE/STREAM") stand for; none: all.

    An unknown name is a FatalError that says what the config has, with a "did you mean"."""
    enabled = [s for s in settings.config.sources if s.enabled]
    every = [StreamKey(s.name, t.name) for s in enabled for t in s.streams]
    if not names:
        return every
    labels = {str(k): k for k in every}
    sources = {s.name: [k for k in every if k.source == s.name] for s in enabled}
    chosen: list[StreamKey] = []
    for name in names:
        picked = [labels[name]] if name in labels else sources.get(name, [])
        if not picked:
            where = f" in {settings.path}" if settings.path else ""
            close = difflib.get_close_matches(name, [*sources, *labels], n=1, cutoff=0.6)
            known = ", ".join(labels) or "none"
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise FatalError(
                f"no enabled source or stream {name!r}{where}; {guess}(streams: {known})"
            )
        chosen.extend(k for k in picked if k not in chosen)
    return chosen


def run_cycle(
    settings: Settings,
    engine: Engine,
    progress: ProgressHook | None = None,
    client: MailchimpClient | None = None,
    now: datetime | None = None,
    full_refresh: Collection[StreamKey] = (),
    allow_mass_removal: bool = False,
) -> CycleReport:
    """Pull → resolve → push. A failure marks the run failed and re-raises; committed pages
    and acknowledged members stay. A stream that fails does not hold back the others: they are
    read and resolved, then the run fails (before rules and push, which need every stream).
    The push runs when audiences are configured and a client is given (or an API key is set).
    Streams in `full_refresh` forget their saved position first and are read from scratch
    (their stored records stay; see `ingest.forget_cursors`). Every line logged during the
    cycle carries its `run_id`; each stage is timed and counted in `metrics`."""
    report = CycleReport(run_id=start_run(engine))
    started = time.perf_counter()
    with log_context(run_id=report.run_id):
        try:
            _stages(settings, engine, report, progress, client, now, full_refresh,
                    allow_mass_removal)  # fmt: skip
        except Exception as exc:
            report.status = "failed"
            report.seconds = time.perf_counter() - started
            metrics.cycle_finished(report.status, report.seconds)
            finish_run(engine, report, message=str(exc)[:2000])
            raise
        report.seconds = time.perf_counter() - started
        metrics.cycle_finished(report.status, report.seconds)
        finish_run(engine, report)
        log.info(
            "run %d %s in %.2fs", report.run_id, report.status, report.seconds,
            extra={"status": report.status, "seconds": round(report.seconds, 3),
                   "counts": _summary(report)},
        )  # fmt: skip
    return report


def _stages(
    settings: Settings,
    engine: Engine,
    report: CycleReport,
    progress: ProgressHook | None,
    client: MailchimpClient | None,
    now: datetime | None,
    full_refresh: Collection[StreamKey],
    allow_mass_removal: bool,
) -> None:
    config = settings.config
    jobs = stream_jobs(settings, report.run_id, progress)
    report.streams.update((key, job.stats) for key, job in jobs.items())  # filled in place
    if full_refresh:
        log.info("full refresh: reading %s from scratch", ", ".join(map(str, full_refresh)))
        forget_cursors(engine, [(k.source, k.stream) for k in full_refresh])
    with metrics.stage("remap"):
        report.remaps = remap_changed_mappings(engine, list(jobs.values()))
    failed: StreamsFailed | None = None
    try:
        with metrics.stage("ingest"):
            ingest_streams(engine, list(jobs.values()), config.ingest.workers)
    except StreamsFailed as exc:
        failed = exc
    _log_stage("ingest", {k: v.as_dict() for k, v in report.streams.items()})
    log.info("resolving identities")
    _stage_started(progress, "resolving identities")
    with metrics.stage("identity"):
        report.resolve = resolve_pending(engine, config.identity, report.run_id)
    _log_stage("identity", report.resolve.as_dict())
    if failed:  # the streams that were read are resolved; rules and push wait for all
        raise failed.first()
    with metrics.stage("rules"):
        if settings.rules is not None:
            log.info("evaluating rules")
            _stage_started(progress, "evaluating rules")
            report.rules = run_rules(engine, settings.rules, now)
            _log_stage("rules", report.rules.as_dict())
        else:
            hand_over(engine)
    if config.mailchimp.audiences and (client or config.mailchimp.api_key):
        log.info("pushing to Mailchimp")
        _stage_started(progress, "pushing to Mailchimp")
        client = client or MailchimpClient(config.mailchimp)
        with metrics.stage("push"):
            report.push = push(
                engine, config.mailchimp, client, progress=progress,
                allow_mass_removal=allow_mass_removal, upstream=push_upstream(settings),
                declared_tags=declared_tags(settings),
            )  # fmt: skip
        metrics.push_finished(report.push)
        _log_stage("push", _push_counts(report.push))
    elif config.mailchimp.audiences:
        report.push_skipped = NO_API_KEY
        log.info("push skipped: %s", NO_API_KEY)
    with metrics.stage("compact"):
        report.compacted = journal.compact(engine, consumers_of(settings, report.push is not None))
