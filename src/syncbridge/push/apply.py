"""A push's plan applied while it is planned: every connection busy from first call to last.

The planner (`chunks.py`) hands over one chunk of 500 profiles at a time. Each chunk goes
through three steps on the push's threads, the next starting when the last call of the one
before finished: renames and archives of replaced addresses, then its batch upsert (and the
PATCHes of pending members), then its tag operations go to the `TagBatcher`, which sends a tag's
call once it is full. Meanwhile the planner plans the next chunks, at most `AHEAD` ahead of the
upserts, which bounds memory whatever the audience's size. When the last chunk's members
exist, the calls left partly filled are sent; leavers are planned and removed last (their tags,
then their archives). Every step acknowledges what it confirmed in one transaction of its
own, so a crash at any point repeats calls and never skips one.

With `batch_threshold` set, initial loads of at least that many new members send their upserts
through `/batches` instead, `BATCH_CHUNKS` chunks per request, while the tags of the previous
request run (off by default: Mailchimp runs one batch at a time, so it is slower than direct
calls on every connection; see bench/README.md).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from functools import partial
from queue import PriorityQueue
from typing import Any

from sqlalchemy import Engine

from ..config.models import AudienceConfig, MailchimpConfig
from .chunks import Planner
from .client import MailchimpClient
from .inline_tags import InlineTags
from .members import archive, change_email, patch_member, upsert_batch, upsert_through_batches
from .plan import Plan
from .report import AudienceReport
from .state import drop_states
from .tags import TagBatcher, TagSegments

AHEAD = 20
"""Chunks planned but whose members are not all confirmed yet (two per connection)."""
BATCH_CHUNKS = 100
"""Chunks whose upserts go in one `/batches` request (50,000 members)."""


class Runner:
    """Calls side by side on `workers` threads. Work may be submitted from any thread, with a
    priority (lower first, then in order); the first failure stops new work from starting
    and is raised by `wait` and `join`."""

    def __init__(self, workers: int) -> None:
        self._queue: PriorityQueue[tuple[int, int, Callable[..., Any], tuple[Any, ...]]]
        self._queue = PriorityQueue()
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._open = 0
        self.error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._work, name=f"push-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 1) -> None:
        with self._changed:
            if self.error is not None:
                return
            self._open += 1
        self._queue.put((priority, next(self._order), fn, args))

    def _work(self) -> None:
        while True:
            _, _, fn, args = self._queue.get()
            if fn is _stop:
                return
            try:
                if self.error is None:
                    fn(*args)
            except BaseException as exc:
                with self._changed:
                    self.error = self.error or exc
            finally:
                with self._changed:
                    self._open -= 1
                    self._changed.notify_all()

    def fan_out(
        self, items: list[Any], fn: Callable[[Any], None], then: Callable[[], None]
    ) -> None:
        """`fn(item)` for each item side by side, then `then()` once all succeeded."""
        if not items:
            then()
            return
        left = [len(items)]
        lock = threading.Lock()

        def one(item: Any) -> None:
            fn(item)
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                then()

        for item in items:
            self.submit(one, item)

    def wait(self, done: Callable[[], bool]) -> None:
        """Block until `done()` (checked whenever a call finishes) or a failure."""
        with self._changed:
            while self.error is None and not done():
                self._changed.wait(timeout=1.0)
        if self.error is not None:
            raise self.error

    def poke(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def join(self) -> None:
        self.wait(lambda: self._open == 0)

    def close(self) -> None:
        """Let the calls in flight finish, drop what has not started, stop the threads."""
        with self._changed:
            self.error = self.error or _Closed()
        for _ in self._threads:
            self._queue.put((9, next(self._order), _stop, ()))
        for thread in self._threads:
            thread.join()


class _Closed(Exception):
    """Set as the runner's error once it is closed: nothing more starts."""


def _stop() -> None:
    """The marker that ends a worker thread."""


class StreamedPush:
    """Applies one audience's plan chunk by chunk (see the module docstring)."""

    def __init__(
        self,
        client: MailchimpClient,
        engine: Engine,
        audience: AudienceConfig,
        report: AudienceReport,
        config: MailchimpConfig,
        segment_ids: dict[str, Any],
    ) -> None:
        self.client, self.engine, self.audience = client, engine, audience
        self.report, self.config = report, config
        self.runner = Runner(client.max_connections)
        self.segments = TagSegments(client, engine, audience.list_id, segment_ids)
        self.tags = TagBatcher(
            client, engine, audience.name, self.segments, report,
            partial(self.runner.submit, priority=0),  # full tag calls go before more upserts
        )  # fmt: skip
        self.inline = InlineTags(config.tags_in_batch, self.segments.spelling)
        self.failed: set[int] = set()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.planned: Counter[str] = Counter()

    def run(self, planner: Planner, through_batches: bool = False) -> set[int]:
        """Apply every chunk, then the leavers; returns the profiles not all confirmed."""
        try:
            if through_batches:
                self._batched(planner)
            else:
                spelled = not self.inline.enabled
                for plan in planner.chunks():
                    if not spelled and any(plan.tag_adds.values()):
                        spelled = True  # names Mailchimp may spell otherwise, read beside renames
                        new = [t for t, m in plan.tag_adds.items() if m]
                        self.runner.submit(self.segments.spell, new, priority=0)
                    self.runner.wait(lambda: self._in_flight < AHEAD)
                    self._count(plan)
                    self._start(plan)
            self.runner.wait(lambda: self._in_flight == 0)
            self.tags.flush()
            self.runner.join()
            self._leavers(planner)
            self.tags.finish()
        finally:
            self.runner.close()
        self.report.created_tags.extend(self.segments.created)
        return self.failed

    # ------------------------------------------------------------------ one chunk

    def _count(self, plan: Plan) -> None:
        self.planned.update(plan.counts())
        with self._lock:
            self._in_flight += 1

    def _start(self, plan: Plan) -> None:
        first: list[Any] = list(plan.email_changes)
        first += [r for r in plan.archives if r.replaced]
        self.runner.fan_out(first, self._renamed, lambda: self._upsert(plan))

    def _renamed(self, item: Any) -> None:
        if hasattr(item, "new_email"):
            failed = change_email(self.client, self.engine, self.audience, item, self.report)
        else:
            failed = archive(self.client, self.engine, self.audience, item, self.report)
        self._fail(failed)

    def _upsert(self, plan: Plan, upserted: bool = False) -> None:
        """The chunk's batch upsert and pending-member patches, then its tags."""
        failed = self.failed
        work: list[Any] = [] if upserted else [
            [u for u in plan.upserts if u.send_status and u.member.profile_id not in failed]
        ]  # fmt: skip
        work = [w for w in work if w]
        work += [u for u in plan.upserts if not u.send_status and u.member.profile_id not in failed]
        self.runner.fan_out(work, partial(self._member_call, plan), lambda: self._tagged(plan))

    def _member_call(self, plan: Plan, item: Any) -> None:
        client, engine, audience, report = self.client, self.engine, self.audience, self.report
        if not isinstance(item, list):
            self._fail(patch_member(client, engine, audience, item, report))
            return
        inline = self.inline.wanted(plan, item)
        done = upsert_batch(client, engine, audience, item, report, inline, plan.tags_had)
        if done.tags_refused:
            self.inline.stop("Mailchimp refused them (400)")
        elif done.tags_unseen:
            self.inline.stop("Mailchimp's answer confirmed none of the tags sent")
        # the chunk's tag operations start only after this call: the plan is ours to change
        for tag, name in done.learned.items():
            self.segments.learn(tag, name)
        tagged = self.inline.settle(plan, done.tagged)
        if tagged:
            report.bump("tag additions", tagged)
        self._fail(done.absent)

    def _tagged(self, plan: Plan) -> None:
        with self._lock:
            skip = set(self.failed)
        self.tags.add(plan, skip)
        with self._lock:
            self._in_flight -= 1
        self.runner.poke()

    def _fail(self, ids: set[int]) -> None:
        if ids:
            with self._lock:
                self.failed |= ids

    # ------------------------------------------------------------------ /batches and leavers

    def _batched(self, planner: Planner) -> None:
        """Upserts through `/batches`, `BATCH_CHUNKS` chunks per request (run from here, one
        request at a time, as Mailchimp runs them), while earlier chunks' tags go on."""
        group: list[Plan] = []
        chunks = planner.chunks()
        while True:
            plan = next(chunks, None)
            if plan is not None:
                self._count(plan)
                group.append(plan)
            if group and (plan is None or len(group) >= BATCH_CHUNKS):
                self._run_group(group)
                group = []
            if plan is None:
                return

    def _run_group(self, group: list[Plan]) -> None:
        for plan in group:  # renames first, as in a direct push
            first: list[Any] = list(plan.email_changes)
            first += [r for r in plan.archives if r.replaced]
            self.runner.fan_out(first, self._renamed, lambda: None)
        self.runner.join()
        batches = []
        for plan in group:
            upserts = [u for u in plan.upserts if u.send_status]
            upserts = [u for u in upserts if u.member.profile_id not in self.failed]
            batches += [upserts[i : i + 500] for i in range(0, len(upserts), 500)]
        if batches:
            absent = upsert_through_batches(
                self.client, self.engine, self.audience, batches, self.report, self.config
            )
            self._fail(absent)
        for plan in group:
            self._upsert(plan, upserted=True)

    def _leavers(self, planner: Planner) -> None:
        """Leavers last: their tags come off, then their members are archived."""
        plans = list(planner.departures())
        for plan in plans:
            self.planned.update(plan.counts())
            self.tags.add(plan, self.failed)
        self.tags.flush()
        self.runner.join()
        leaving = [r for plan in plans for r in plan.archives if not r.replaced]
        self.runner.fan_out(leaving, self._renamed, lambda: None)
        self.runner.join()
        released = [pid for plan in plans for pid in plan.released]
        if released:
            with self.engine.begin() as conn:
                drop_states(conn, self.audience.name, released)
