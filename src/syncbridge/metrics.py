"""Prometheus metrics of the sync agent, on `prometheus_client`'s default registry.

The daemon's HTTP server serves `prometheus_client.generate_latest()` at `/metrics`; a
one-shot command records the same series, which simply end with its process. Every name
starts with `syncbridge_`. Labels carry only names from the code or the config (a source, a
stream, an audience, a consumer, a job, an endpoint *template*) and status codes: never an
email, a token, a list id, a record id or a raw path — `endpoint_of` turns
`/lists/a1b2c3/members/5f3e…/tags` into `/lists/{id}/members/{id}/tags`.

Who records what:

    remote.py    syncbridge_api_calls_total, _api_errors_total, _api_rate_limited_total,
                 _api_retries_total, _api_call_duration_seconds (every HTTP request of every
                 remote API goes through it)
    ingest.py    syncbridge_records_pulled_total, _record_errors_total (each committed page,
                 whoever runs the ingest: a cycle or a daemon's pull job)
    pipeline.py  syncbridge_stage_duration_seconds, _cycle_duration_seconds, _cycles_total
                 (`run_cycle`), and the push report's counts:
    intake       syncbridge_intake_events_total (accepted, committed), _intake_refused_total
                 (requests, by reason: auth, invalid, store)
    webhooks     syncbridge_shopify_webhooks_total (Shopify deliveries, by topic and outcome:
                 applied, stale, duplicate, ignored, logged, unauthorized, invalid, …)
    a push       syncbridge_push_operations_total, _members_pushed_total,
                 _members_refused_total (`audience_pushed(report)`, after a destination ran)
    scrape time  syncbridge_journal_lag, _journal_offset, _journal_head, _cache_up: read from
                 the cache by `JournalCollector` when Prometheus asks (`watch_journal`)

Job-level series (last success time, runs, durations per daemon job) belong to the daemon
(`syncbridge.daemon.metrics`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from .push.report import AudienceReport
    from .push.sync import PushReport

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

RECORDS_PULLED = Counter(
    "syncbridge_records_pulled", "Records read from a source stream.", ["source", "stream"]
)
RECORD_ERRORS = Counter(
    "syncbridge_record_errors", "Per-record errors kept for a source stream.", ["source", "stream"]
)
STAGE_SECONDS = Histogram(
    "syncbridge_stage_duration_seconds",
    "Wall time of one pipeline stage in a cycle.",
    ["stage"],
    buckets=DURATION_BUCKETS,
)
CYCLE_SECONDS = Histogram(
    "syncbridge_cycle_duration_seconds",
    "Wall time of one pipeline cycle.",
    buckets=DURATION_BUCKETS,
)
CYCLES = Counter("syncbridge_cycles", "Pipeline cycles, by outcome.", ["status"])
API_CALLS = Counter(
    "syncbridge_api_calls",
    "HTTP requests to a remote API, by endpoint template and status (or network error).",
    ["service", "method", "endpoint", "status"],
)
API_ERRORS = Counter(
    "syncbridge_api_errors",
    "HTTP requests that failed: an error status or a network error.",
    ["service", "endpoint", "status"],
)
API_RATE_LIMITED = Counter(
    "syncbridge_api_rate_limited", "429 Too Many Requests answers.", ["service", "endpoint"]
)
API_RETRIES = Counter(
    "syncbridge_api_retries",
    "Calls repeated after a transient failure (429, 5xx, timeout, connection reset).",
    ["service", "reason"],
)
API_SECONDS = Histogram(
    "syncbridge_api_call_duration_seconds",
    "Time of one HTTP request to a remote API.",
    ["service"],
    buckets=API_BUCKETS,
)
PUSH_OPERATIONS = Counter(
    "syncbridge_push_operations",
    "Operations a destination confirmed (new members, updates, archives, tag changes, …).",
    ["audience", "operation"],
)
MEMBERS_PUSHED = Counter(
    "syncbridge_members_pushed",
    "Members written to an audience (added, updated, archived, email changed).",
    ["audience"],
)
MEMBERS_REFUSED = Counter(
    "syncbridge_members_refused", "Members the destination refused.", ["audience"]
)

INTAKE_EVENTS = Counter(
    "syncbridge_intake_events", "Events the intake accepted (each committed to the cache)."
)
INTAKE_REFUSED = Counter(
    "syncbridge_intake_refused", "Intake requests refused, by reason.", ["reason"]
)
SHOPIFY_WEBHOOKS = Counter(
    "syncbridge_shopify_webhooks",
    "Shopify webhook deliveries, by topic and outcome (applied, stale, duplicate, ignored, "
    "logged, unauthorized, invalid, too_large, store_error).",
    ["topic", "outcome"],
)
MEMBER_OPERATIONS = frozenset({"new members", "member updates", "archived", "email changes"})
"""The push report's operations that write a member (the others are tags and batches)."""

# ---------------------------------------------------------------------- endpoint templates

ID = "{id}"
_WORD = re.compile(r"[A-Za-z_][A-Za-z_-]{0,63}")
_VERSION = re.compile(r"v?\d+(\.\d+)+|v\d+")
_COLLECTIONS = frozenset(
    {"lists", "members", "segments", "merge-fields", "batches", "batch-webhooks", "webhooks",
     "interest-categories", "interests", "notes", "activity", "campaigns", "automations",
     "templates", "reports", "query", "queryAll", "ingest", "batch-results"}
)  # fmt: skip
"""Path segments whose next segment names one item (an id), even when it looks like a word."""


def endpoint_of(path: str) -> str:
    """A request path as a template with bounded values: words (resource names, Salesforce
    object names) and version numbers stay; anything else — ids, hashes, emails, locators,
    the segment after a collection name — becomes `{id}`."""
    parts: list[str] = []
    previous = ""
    for segment in path.split("/"):
        if not segment:
            continue
        keep = previous not in _COLLECTIONS and (
            _WORD.fullmatch(segment) is not None or _VERSION.fullmatch(segment) is not None
        )
        parts.append(segment if keep else ID)
        previous = segment if keep else ""
    return "/" + "/".join(parts)


def api_call(service: str, method: str, path: str, outcome: int | str, seconds: float) -> None:
    """One HTTP request (remote.py's adapter): `outcome` a status code or a network error."""
    endpoint = endpoint_of(path)
    status = str(outcome)
    API_CALLS.labels(service, method, endpoint, status).inc()
    API_SECONDS.labels(service).observe(seconds)
    if not isinstance(outcome, int) or outcome >= 400:
        API_ERRORS.labels(service, endpoint, status).inc()
    if outcome == 429:
        API_RATE_LIMITED.labels(service, endpoint).inc()


def api_retry(service: str, reason: str) -> None:
    API_RETRIES.labels(service, reason).inc()


# ---------------------------------------------------------------------- pipeline


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Times a pipeline stage (also when it fails)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)


def cycle_finished(status: str, seconds: float) -> None:
    CYCLES.labels(status).inc()
    CYCLE_SECONDS.observe(seconds)


def page_committed(source: str, stream: str, read: int, errors: int) -> None:
    """One committed page of a stream (ingest.py): records read, per-record errors kept."""
    RECORDS_PULLED.labels(source, stream).inc(read)
    if errors:
        RECORD_ERRORS.labels(source, stream).inc(errors)


def intake_accepted(events: int) -> None:
    INTAKE_EVENTS.inc(events)


def intake_refused(reason: str) -> None:
    INTAKE_REFUSED.labels(reason).inc()


def shopify_webhook(topic: str, outcome: str) -> None:
    """One Shopify delivery answered (`topic` a known topic's name, `other` or `unknown`)."""
    SHOPIFY_WEBHOOKS.labels(topic, outcome).inc()


def audience_pushed(report: AudienceReport) -> None:
    """One destination pass's confirmed operations and refusals, by the audience's config
    name (never its list id): the pipeline calls it per audience, the daemon after each
    destination job."""
    name = report.audience
    for operation, n in report.applied.items():
        PUSH_OPERATIONS.labels(name, operation.replace(" ", "_")).inc(n)
    MEMBERS_PUSHED.labels(name).inc(
        sum(n for op, n in report.applied.items() if op in MEMBER_OPERATIONS)
    )
    MEMBERS_REFUSED.labels(name).inc(len(report.errors))


def push_finished(report: PushReport) -> None:
    for audience in report.audiences:
        audience_pushed(audience)


# ---------------------------------------------------------------------- journal, at scrape time


class JournalCollector(Collector):
    """Reads each journal consumer's offset and lag from the cache when scraped, so the
    figures are current between cycles and cost nothing when nobody looks. A cache that does
    not answer gives `syncbridge_cache_up 0` and no lag series (never a failed scrape)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Any]:
        return []  # collected lazily: nothing is read when the collector is registered

    def collect(self) -> Iterable[Any]:
        from .store import journal
        from .store.tables import ConsumerOffset

        up = GaugeMetricFamily("syncbridge_cache_up", "1 when the cache answered this scrape.")
        try:
            with self.engine.connect() as conn:
                names = list(conn.execute(ConsumerOffset.__table__.select()).mappings())
                lags = journal.lags(conn, [row["consumer"] for row in names])
                head = journal.head(conn)
        except Exception as exc:  # a scrape must answer even when the cache does not
            log.warning("metrics: the cache did not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        lag = GaugeMetricFamily(
            "syncbridge_journal_lag",
            "Journal entries a consumer has yet to read.",
            labels=["consumer"],
        )
        offset = GaugeMetricFamily(
            "syncbridge_journal_offset", "How far a consumer has read.", labels=["consumer"]
        )
        for consumer, figures in sorted(lags.items()):
            lag.add_metric([consumer], figures["lag"] or 0)
            offset.add_metric([consumer], figures["offset"] or 0)
        yield lag
        yield offset
        newest = GaugeMetricFamily("syncbridge_journal_head", "The newest journal sequence number.")
        newest.add_metric([], head)
        yield newest


_watched: JournalCollector | None = None
_watch_lock = threading.Lock()


def watch_journal(engine: Engine) -> JournalCollector:
    """Have `/metrics` report this cache's journal; a later call (a reload) swaps the cache."""
    global _watched
    with _watch_lock:
        if _watched is None:
            _watched = JournalCollector(engine)
            REGISTRY.register(_watched)
        else:
            _watched.engine = engine
        return _watched


def unwatch_journal() -> None:
    """Stop reporting the journal (a daemon's shutdown; tests)."""
    global _watched
    with _watch_lock:
        if _watched is not None:
            REGISTRY.unregister(_watched)
            _watched = None
