"""What each daemon job does: the pipeline's stages, one job each, and when a consumer has work.

Jobs, by name:

    pull:SOURCE            read the source's streams (re-mapping first what an edited mapping
                           changed) — on the source's schedule or cron
    identity               resolve the journal's record changes into profiles (and, without a
                           rules file, hand them straight to the destinations)
    rules                  evaluate the journal's profile changes, and profiles whose time
                           windows expire
    mailchimp:AUDIENCE     the audience as a destination: read back, claim, plan, apply,
                           acknowledge (`push.sync.MailchimpAudience`)
    compact                delete journal entries every consumer has read

Each function returns the counts a run records, and whether it did anything (an idle pass
leaves no run row behind). `waiting` says how much a consumer has to do, from the journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from .. import metrics as sync_metrics
from ..config.loader import Settings, StreamKey
from ..connectors import connector_class
from ..destinations import queue
from ..identity import resolve_pending
from ..ingest import StreamsFailed, forget_cursors, ingest_streams
from ..pipeline import consumers_of, declared_tags, push_upstream, stream_jobs
from ..push.client import MailchimpClient
from ..push.sync import MailchimpAudience, destination_name
from ..remap import remap_changed_mappings
from ..rules.stage import hand_over, run_rules
from ..store import journal

Outcome = tuple[dict[str, Any], bool]
"""(counts for the run row, whether the pass did anything)."""

PULL, IDENTITY, RULES, COMPACT = "pull:", "identity", "rules", "compact"


@dataclass
class Context:
    """What a job needs besides the settings: the cache, the Mailchimp client, options."""

    engine: Engine
    client: MailchimpClient | None
    allow_mass_removal: bool = False


def pull(
    settings: Settings, ctx: Context, source: str, run_id: int, refresh: list[StreamKey]
) -> Outcome:
    """Read one source. A stream that fails does not stop its siblings; the job then fails."""
    jobs = stream_jobs(settings, run_id, only=source)
    if refresh:
        forget_cursors(ctx.engine, [(k.source, k.stream) for k in refresh])
    remaps = remap_changed_mappings(ctx.engine, list(jobs.values()))
    failed: StreamsFailed | None = None
    try:
        ingest_streams(ctx.engine, list(jobs.values()), settings.config.ingest.workers)
    except StreamsFailed as exc:
        failed = exc
    counts: dict[str, Any] = {"streams": {k: j.stats.as_dict() for k, j in jobs.items()}}
    if remaps:
        counts["remapped"] = {k: v.as_dict() for k, v in remaps.items()}
    if failed is not None:
        raise failed.first()
    changed = any(
        j.stats.inserted or j.stats.updated or j.stats.deleted or j.stats.errors
        for j in jobs.values()
    )
    return counts, changed or bool(remaps)


def identity(settings: Settings, ctx: Context, run_id: int) -> Outcome:
    stats = resolve_pending(ctx.engine, settings.config.identity, run_id)
    if settings.rules is None:
        hand_over(ctx.engine)
    return {"identity": stats.as_dict()}, any(stats.as_dict().values())


def rules(settings: Settings, ctx: Context, run_id: int) -> Outcome:
    stats = run_rules(ctx.engine, settings.rules)
    return {"rules": stats.as_dict()}, any(stats.as_dict().values())


def destination(settings: Settings, ctx: Context, audience_name: str, run_id: int) -> Outcome:
    config = settings.config.mailchimp
    audience = next(a for a in config.audiences if a.name == audience_name)
    if ctx.client is None:
        raise RuntimeError("no Mailchimp client")  # jobs exist only with an API key
    target = MailchimpAudience(
        audience, config, ctx.client, push_upstream(settings), declared_tags=declared_tags(settings)
    )
    target.allow_mass_removal = ctx.allow_mass_removal
    target.sync(ctx.engine)
    report = target.report
    sync_metrics.audience_pushed(report)
    counts = {
        "push": {
            audience.name: {
                "planned": report.planned,
                "applied": report.applied,
                "read_back": report.read_back,
                "errors": len(report.errors),
            }
        }
    }
    changes = any(n for key, n in report.planned.items() if key != "unchanged")
    did = bool(report.applied or report.errors or report.created_fields or changes)
    return counts, did


def compact(settings: Settings, ctx: Context, run_id: int) -> Outcome:
    removed = journal.compact(ctx.engine, consumers_of(settings, ctx.client is not None))
    return {"compacted": removed}, bool(removed)


def pushing(settings: Settings) -> bool:
    mailchimp = settings.config.mailchimp
    return bool(mailchimp.audiences and mailchimp.api_key)


def job_names(settings: Settings) -> list[str]:
    """Every job of this setup, pulls first, in pipeline order."""
    names = [PULL + s.name for s in settings.config.sources
             if s.enabled and connector_class(s.connector).pulled]  # fmt: skip
    names.append(IDENTITY)
    if settings.rules is not None:
        names.append(RULES)
    if pushing(settings):
        names += [destination_name(a) for a in settings.config.mailchimp.audiences]
    names.append(COMPACT)
    return names


def consumer_of(job: str) -> str | None:
    """The journal consumer a job is (None: a pull or compaction)."""
    if job.startswith(PULL) or job == COMPACT:
        return None
    return job


def waiting(engine: Engine, settings: Settings, job: str, cap: int) -> int:
    """How many journal entries (and, for a destination, queued profiles) wait for this
    consumer, counted up to `cap`. A consumer that never read has everything waiting."""
    with engine.connect() as conn:
        after, upto, first = journal.claim_range(conn, job)
        if first:
            return cap
        if job == IDENTITY:
            kinds = [journal.RECORD]
        elif job == RULES:
            kinds = [journal.PROFILE]
        else:
            kinds = [push_upstream(settings), journal.MEMBER]
        c = journal.CHANGES.c
        above = select(c.seq).where(c.kind.in_(kinds), c.seq > after, c.seq <= upto).limit(cap)
        count = int(conn.execute(select(func.count()).select_from(above.subquery())).scalar_one())
        if job not in (IDENTITY, RULES) and count < cap:
            q = queue.QUEUE.c
            held = select(q.profile_id).where(q.destination == job).limit(cap - count)
            count += int(
                conn.execute(select(func.count()).select_from(held.subquery())).scalar_one()
            )
    return count


Work = Callable[[Settings, Context, int], Outcome]


def work_of(job: str, refresh: Callable[[str], list[StreamKey]]) -> Work:
    """The function that runs `job` (given a run id); `refresh` hands a pull the streams to
    read from scratch (the daemon's --full-refresh, on its first pass only)."""
    if job.startswith(PULL):
        source = job.removeprefix(PULL)
        return lambda s, c, r: pull(s, c, source, r, refresh(source))
    if job == IDENTITY:
        return identity
    if job == RULES:
        return rules
    if job == COMPACT:
        return compact
    audience = job.split(":", 1)[1]
    return lambda s, c, r: destination(s, c, audience, r)
