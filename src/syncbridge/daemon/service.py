"""`syncbridge daemon`: the pipeline's stages as jobs, until SIGTERM or SIGINT.

Jobs (`work.py`): a pull per source on its `schedule` or `cron` (APScheduler triggers), and
the journal's consumers — identity, rules, one destination per audience — which run as soon as
the journal has work for them (the main loop looks every 0.2 s, and at once after a job
ended). A destination sends micro-batches: at most one pass every `[daemon] flush_s` — the
first change after a quiet spell goes at once, those arriving meanwhile wait for the next
pass — or as soon as `flush_members` changes wait; a bulk load is far past that and goes at
once, batched fully by the push. Consumers also run every `[daemon] schedule` (a
destination reads Mailchimp's changes back; rules expire time windows).

A job never overlaps itself (`max_instances=1`); fires missed while it ran coalesce into one.
A failing job is logged and retried after 5 s, 10 s, 20 s … at most `backoff_max_s` apart; the
others go on. Only the holder of a job's lease runs it (`leases.py`).

The writer lock (`store/writer_lock.py`) is held for the daemon's life: on SQLite exclusively
(a second daemon or `run --once` is refused: exit 2), on PostgreSQL shared by every agent.

Signals: SIGTERM/SIGINT stop taking work; running jobs finish, and a push sends no further
call (`gate.py`), so what was acknowledged stays exactly what Mailchimp confirmed; the leases
are released and the process exits 0, at the latest after `shutdown_timeout_s`. SIGHUP, or an
edit of the config, a mapping or the rules file, reloads the setup; one that does not validate
keeps the running setup and logs why (`reload.py`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from .. import metrics as sync_metrics
from ..alerts import AlertState
from ..config.loader import Settings, StreamKey
from ..config.timing import interval
from ..errors import SyncbridgeError
from ..intake.commit import GroupCommit
from ..intake.setup import build_intake
from ..intake.shopify import WebhookWriter, build_shopify_webhooks
from ..redaction import redact
from ..store.engine import open_engine
from ..store.failures import store_failure
from ..store.writer_lock import writer_lock
from . import metrics, runs, work
from .gate import GatedClient, ShuttingDown
from .http import HttpServer, build_app
from .leases import JobBoard, agent_name, job_rows
from .page import page_routes
from .reload import Watched, reload

log = logging.getLogger("syncbridge.daemon")
POLL_S = 0.2
"""How often the main loop looks for consumers with work (and at once after a job ended)."""
BACKOFF_FIRST_S = 5.0
COMPACT_EVERY_S = 60.0


@dataclass(frozen=True)
class DaemonOptions:
    wait: float = 0.0
    """Seconds to wait at start for another process's writer lock."""
    full_refresh: list[StreamKey] = field(default_factory=list)
    """Streams the first pull of their source reads from scratch."""
    allow_mass_removal: bool = False
    default_schedule: str | None = None
    """Overrides `[daemon] schedule` (`run --every N` passes `Ns`)."""


@dataclass
class JobState:
    """What this agent knows of one job between runs."""

    running: bool = False
    failures: int = 0
    failing_since: datetime | None = None
    last_error: str | None = None
    last_success: datetime | None = None
    retry_at: float = 0.0
    """time.monotonic() before which the job does not run (its backoff)."""


class Daemon:
    def __init__(self, settings: Settings, options: DaemonOptions) -> None:
        self.watched = Watched.of(settings)
        self.options = options
        self.agent = agent_name()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.reload_asked = threading.Event()
        self.states: dict[str, JobState] = {}
        self.held: set[str] = set()
        self.last_flush: dict[str, float] = {}
        """When each destination last started (time.monotonic()): micro-batches are flushed
        at most every flush_s, at once after a quiet spell, or at flush_members waiting."""
        self.triggers: dict[str, tuple[str, str]] = {}
        self.refresh = list(options.full_refresh)
        self.client: GatedClient | None = None
        self.http: HttpServer | None = None
        self.intake: GroupCommit | None = None
        self.shopify: WebhookWriter | None = None
        self._guard = threading.Lock()
        self.alerts = AlertState.from_config(settings.config.daemon)
        """Failure alerts: a job failing `alert_after` times in a row, and its recovery."""

    @property
    def settings(self) -> Settings:
        return self.watched.settings

    # --- the life of the daemon

    def run(self) -> None:
        """Serve until a stop signal; returns once stopped (the caller exits 0)."""
        store = self.settings.config.store
        # Migrations first, under the lock held exclusively for them: agents sharing the lock
        # would otherwise migrate side by side.
        self.engine = open_engine(store.url, store.echo)
        sync_metrics.watch_journal(self.engine)  # /metrics reads the journal's lag at scrape time
        with writer_lock(store.url, "daemon", self.options.wait, shared=True):
            if self.engine.dialect.name == "sqlite" and (n := runs.interrupt_all(self.engine)):
                log.info("%d run(s) left running by a process that died marked interrupted", n)
            self.board = JobBoard(self.engine, self.settings.config.daemon.lease_s, self.agent)
            self._build_client()
            self._install_signals()
            if self.settings.config.daemon.http:
                self._start_http()
            from apscheduler.executors.pool import ThreadPoolExecutor
            from apscheduler.schedulers.background import BackgroundScheduler

            self.scheduler = BackgroundScheduler(
                timezone=UTC,
                executors={"default": ThreadPoolExecutor(16)},
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            )
            logging.getLogger("apscheduler").setLevel(logging.ERROR)  # skipped fires are normal
            self._schedule_jobs()
            self.held = self.board.acquire(list(self.triggers))
            self.scheduler.start()
            log.info(
                "daemon started as %s: %s (SIGTERM or Ctrl-C stops it, SIGHUP reloads)",
                self.agent,
                ", ".join(self.triggers),
            )
            try:
                self._main_loop()
            finally:
                self._shutdown()

    def _main_loop(self) -> None:
        daemon = self.settings.config.daemon
        next_lease = next_reload = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_lease:
                self._renew_leases()
                next_lease = now + self.board.renew_every_s
            if self.reload_asked.is_set():
                self.reload_asked.clear()
                self._reload("SIGHUP")
            elif now >= next_reload:
                if self.watched.changed():
                    self._reload("a file changed")
                next_reload = now + daemon.reload_poll_s
            self._kick_consumers()
            self.wake.wait(POLL_S)
            self.wake.clear()

    def _shutdown(self) -> None:
        timeout = self.settings.config.daemon.shutdown_timeout_s
        deadline = time.monotonic() + timeout
        log.info("stopping: no new work; waiting up to %gs for running jobs", timeout)
        self.scheduler.shutdown(wait=False)
        while time.monotonic() < deadline and (busy := self._running()):
            time.sleep(0.05)
        busy = self._running()
        self.board.release(self.held - set(busy))
        if self.http is not None:
            self.http.stop()  # no new request: what was accepted is stored, then the writer stops
        if self.intake is not None:
            self.intake.close()
        if self.shopify is not None:
            self.shopify.close()
        self.alerts.close(timeout=5.0)  # send what is queued (a stop should not swallow "failing")
        if busy:
            log.warning(
                "stopped with %s still running: its uncommitted work is abandoned, "
                "its acknowledged work stays",
                ", ".join(busy),
            )
            logging.shutdown()
            os._exit(0)  # the job's thread would hold the interpreter open
        log.info("daemon stopped")

    def _running(self) -> list[str]:
        return [name for name, s in self.states.items() if s.running]

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            if self.stopping.is_set() and signum == signal.SIGINT:
                return
            log.info("%s received", signal.Signals(signum).name)
            self.stopping.set()
            self.wake.set()

        def hup(_signum: int, _frame: Any) -> None:
            self.reload_asked.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, hup)

    def _start_http(self) -> None:
        daemon = self.settings.config.daemon
        token = daemon.admin_token.get_secret_value() if daemon.admin_token else None
        intake = build_intake(lambda: self.settings, self.engine)
        routes, self.intake = intake if intake is not None else ([], None)
        hooks = build_shopify_webhooks(lambda: self.settings, self.engine)
        webhooks, self.shopify = hooks if hooks is not None else ([], None)
        routes = [*page_routes(self.engine, token), *routes, *webhooks]
        self.http = HttpServer(build_app(self, token, routes), daemon.http or "")
        self.http.start()
        if self.intake is not None:
            log.info("event intake on http://%s/v1/track, /v1/batch, … (Segment's HTTP API)",
                     self.http.address)  # fmt: skip
        if self.shopify is not None:
            log.info("Shopify webhooks on http://%s/webhooks/shopify", self.http.address)

    def _build_client(self) -> None:
        self.client = (
            GatedClient(self.settings.config.mailchimp, self.stopping, self.agent)
            if work.pushing(self.settings)
            else None
        )

    # --- jobs and their triggers

    def _trigger_of(self, name: str, settings: Settings) -> tuple[str, str]:
        daemon = settings.config.daemon
        default = self.options.default_schedule or daemon.schedule
        if name.startswith(work.PULL):
            source = settings.config.source(name.removeprefix(work.PULL))
            if source.cron:
                return ("cron", source.cron)
            return ("interval", source.schedule or default)
        if name == work.COMPACT:
            return ("interval", f"{COMPACT_EVERY_S:g}s")
        return ("interval", default)

    @staticmethod
    def _trigger(spec: tuple[str, str]) -> Any:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        kind, value = spec
        if kind == "cron":
            return CronTrigger.from_crontab(value, timezone=UTC)
        return IntervalTrigger(seconds=interval(value).total_seconds(), timezone=UTC)

    def _schedule_jobs(self) -> None:
        """Make the scheduler's jobs match the setup: add, re-time or remove."""
        settings = self.settings
        names = work.job_names(settings)
        self.board.ensure(names)
        for name in list(self.triggers):
            if name not in names:
                self.scheduler.remove_job(name)
                del self.triggers[name]
                log.info("job %s removed", name, extra={"job": name})
        for name in names:
            spec = self._trigger_of(name, settings)
            self.states.setdefault(name, JobState())
            if name not in self.triggers:
                self.scheduler.add_job(
                    self._run_job,
                    self._trigger(spec),
                    args=[name],
                    id=name,
                    name=name,
                    next_run_time=datetime.now(UTC),  # a first pass at start
                )
            elif self.triggers[name] != spec:
                self.scheduler.reschedule_job(name, trigger=self._trigger(spec))
                log.info("job %s now runs on %s %s", name, *spec, extra={"job": name})
            self.triggers[name] = spec

    def kick(self, name: str) -> None:
        """Run a job now (the scheduler coalesces a kick into a run already going)."""
        from apscheduler.jobstores.base import JobLookupError

        if name in self.triggers and not self.stopping.is_set():
            with suppress(JobLookupError):  # removed by a reload meanwhile
                self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def _kick_consumers(self) -> None:
        settings = self.settings
        daemon = settings.config.daemon
        now = time.monotonic()
        for name in list(self.triggers):
            consumer = work.consumer_of(name)
            state = self.states.get(name)
            if consumer is None or state is None or name not in self.held:
                continue
            try:
                waiting = work.waiting(self.engine, settings, name, daemon.flush_members)
            except Exception as exc:  # the cache is unreachable: /readyz says so
                log.debug("cannot look at %s's work: %s", name, exc)
                return
            if not waiting or state.running or now < state.retry_at:
                continue
            batched = name not in (work.IDENTITY, work.RULES)
            since = now - self.last_flush.get(name, 0.0)
            if batched and waiting < daemon.flush_members and since < daemon.flush_s:
                continue
            self.kick(name)

    def _renew_leases(self) -> None:
        try:
            held = self.board.acquire(list(self.triggers))
        except Exception as exc:
            log.warning("could not renew the job leases: %s", redact(str(exc)))
            return
        for name in held - self.held:
            log.info("took over job %s", name, extra={"job": name})
            self.kick(name)
        for name in self.held - held:
            log.warning("lost the lease of job %s to another agent", name, extra={"job": name})
        self.held = held
        for name in self.triggers:
            metrics.JOB_LEASE_HELD.labels(name).set(1 if name in held else 0)
        try:
            self.board.planned({name: self._next_run(name) for name in held})
        except Exception as exc:
            log.debug("could not write next run times: %s", exc)

    def _next_run(self, name: str) -> datetime | None:
        job = self.scheduler.get_job(name)
        when: datetime | None = job.next_run_time if job is not None else None
        state = self.states[name]
        wait = state.retry_at - time.monotonic()
        if wait > 0:
            after = datetime.now(UTC) + timedelta(seconds=wait)
            when = after if when is None or when < after else when
        return when

    def _refresh_of(self, source: str) -> list[StreamKey]:
        mine = [k for k in self.refresh if k.source == source]
        self.refresh = [k for k in self.refresh if k.source != source]
        return mine

    # --- one run of one job

    def _run_job(self, name: str) -> None:
        state = self.states[name]
        if self.stopping.is_set() or time.monotonic() < state.retry_at:
            return
        if name not in self.held:
            if name not in self.board.acquire([name]):
                return  # another agent runs it
            log.info("took over job %s", name, extra={"job": name})
            self.held.add(name)
        settings = self.settings
        context = work.Context(self.engine, self.client, self.options.allow_mass_removal)
        with self._guard:
            if state.running:
                return
            state.running = True
        self.last_flush[name] = time.monotonic()
        started = time.perf_counter()
        error: str | None = None
        counts: dict[str, Any] = {}
        did = True
        run_id: int | None = None
        try:
            run_id = runs.begin(self.engine, name, self.agent)
            self.board.started(name, run_id)
            counts, did = work.work_of(name, self._refresh_of)(settings, context, run_id)
        except ShuttingDown as exc:
            error = str(exc)
        except SyncbridgeError as exc:
            error = redact(str(exc))
        except Exception as exc:
            failure = store_failure(exc, settings.config.store.url)
            if failure is None:
                log.exception("job %s failed with an unexpected error", name, extra={"job": name})
                error = redact(f"{type(exc).__name__}: {exc}")
            else:
                error = str(failure)
        finally:
            with self._guard:
                state.running = False
        self._record(name, state, run_id, counts, did, error, time.perf_counter() - started)
        self.wake.set()  # the next consumer may have work now

    def _record(
        self,
        name: str,
        state: JobState,
        run_id: int | None,
        counts: dict[str, Any],
        did: bool,
        error: str | None,
        seconds: float,
    ) -> None:
        now = datetime.now(UTC)
        extra = {"job": name, "run_id": run_id}
        metrics.JOB_DURATION.labels(name).observe(seconds)
        metrics.JOB_RUNS.labels(name, "failed" if error else "ok").inc()
        if error is None:
            if state.failures:
                log.info(
                    "job %s recovered after %d failed run(s)", name, state.failures, extra=extra
                )
            state.failures, state.failing_since, state.last_error = 0, None, None
            state.last_success, state.retry_at = now, 0.0
            metrics.JOB_LAST_SUCCESS.labels(name).set(now.timestamp())
        elif self.stopping.is_set():
            log.info("job %s stopped for the shutdown: %s", name, error, extra=extra)
        else:
            state.failures += 1
            state.failing_since = state.failing_since or now
            state.last_error = error
            backoff = min(
                BACKOFF_FIRST_S * 2 ** (state.failures - 1),
                self.settings.config.daemon.backoff_max_s,
            )
            state.retry_at = time.monotonic() + backoff
            log.error(
                "job %s failed (%d in a row; next try in %gs at the earliest): %s",
                name,
                state.failures,
                backoff,
                error,
                extra=extra,
            )
        metrics.JOB_FAILURES_IN_A_ROW.labels(name).set(state.failures)
        if error is None or not self.stopping.is_set():  # a shutdown's abandoned run is no failure
            self.alerts.record(name, error is None, error)
        try:
            if run_id is not None:
                if error is None and not did:
                    runs.discard(self.engine, run_id)
                else:
                    runs.end(self.engine, run_id, name, self.agent, counts, error)
                    if error is None:
                        log.info(
                            "job %s done in %.2fs", name, seconds, extra={**extra, "counts": counts}
                        )
            self.board.finished(name, error, state.failing_since)
        except Exception as exc:
            log.warning("could not record the run of %s: %s", name, redact(str(exc)))

    # --- reloading

    def _reload(self, why: str) -> None:
        new = reload(self.watched, why)
        if new is None:
            return
        old = self.settings
        if new.settings.config.store != old.config.store:
            log.error(
                "reload (%s) refused: store changes need a restart; the previous setup "
                "stays in use",
                why,
            )
            return
        if new.settings.config.daemon.http != old.config.daemon.http:
            log.warning("[daemon] http changes take effect at the next start")
        self.watched = new
        if new.settings.config.mailchimp != old.config.mailchimp:
            self._build_client()
        alerting = ("alert_webhook", "alert_after")
        before, after = old.config.daemon, new.settings.config.daemon
        if any(getattr(before, k) != getattr(after, k) for k in alerting):
            self.alerts.close(timeout=5.0)
            self.alerts = AlertState.from_config(after)
        self._schedule_jobs()
        for name in self.triggers:  # re-map and re-evaluate with what was edited
            if name.startswith(work.PULL) or name in (work.IDENTITY, work.RULES):
                self.kick(name)

    # --- what the HTTP server shows (daemon/http.py's DaemonView)

    def readiness(self) -> dict[str, Any]:
        reasons: list[str] = []
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            reasons.append(f"the cache is unreachable: {redact(str(exc))[:300]}")
        limit = self.settings.config.daemon.ready_failing_s
        now = datetime.now(UTC)
        for name, state in self.states.items():
            since = state.failing_since
            if work.consumer_of(name) and since and (now - since).total_seconds() > limit:
                reasons.append(
                    f"{name} has been failing since {since:%Y-%m-%d %H:%M:%S} UTC "
                    f"({state.failures} runs): {state.last_error}"
                )
        if self.stopping.is_set():
            reasons.append("the daemon is stopping")
        return {"ready": not reasons, "reasons": reasons}

    def status(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = {row["job"]: row for row in job_rows(conn)}
        jobs = {}
        for name, trigger in list(self.triggers.items()):
            state, row = self.states[name], rows.get(name, {})
            jobs[name] = {
                "trigger": " ".join(trigger),
                "held_here": name in self.held,
                "holder": row.get("holder"),
                "running": state.running,
                "next_run_at": _iso(self._next_run(name)) if name in self.held else None,
                "last_status": row.get("last_status"),
                "last_success_at": _iso(row.get("last_success_at")),
                "failures": state.failures,
                "failing_since": _iso(state.failing_since),
                "last_error": state.last_error,
            }
        return {"agent": self.agent, "jobs": jobs}

    def run_source(self, source: str) -> tuple[int, dict[str, Any]]:
        from ..references import did_you_mean

        name = work.PULL + source
        if name not in self.triggers:
            sources = [n.removeprefix(work.PULL) for n in self.triggers if n.startswith(work.PULL)]
            return 404, {"error": f"no enabled source {source!r}{did_you_mean(source, sources)}"}
        if name not in self.held:
            return 409, {"error": f"another agent holds the lease of {name}; ask it instead"}
        self.states[name].retry_at = 0.0  # asked for by hand: past any backoff
        self.kick(name)
        return 202, {"job": name, "queued": True}


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if isinstance(moment, datetime) else None


def run_daemon(settings: Settings, options: DaemonOptions) -> None:
    """Run the daemon until a stop signal (see the module docstring)."""
    Daemon(settings, options).run()
