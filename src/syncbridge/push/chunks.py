"""The plan of a push, chunk by chunk: only a few chunks of it are in memory at a time.

A profile's plan needs to know about other profiles only where an address changes hands: a
profile leaving the audience (deleted, merged away, out of its segment) must not have its
member archived when another profile holds or wants that address, and the profile taking the
address over inherits what Mailchimp holds there. Only profiles with an acknowledged address
can leave, so `Planner.prepare` first plans those (few, in a steady cycle; none in a first
push) to find the leavers and to count every removal for the mass-removal guard before
anything is sent. `chunks` then plans everyone else in order, 500 at a time, and
`departures` plans the leavers last, once it is known which of their addresses were taken.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from ..config.models import AudienceConfig
from ..store.bulk import chunks as slices
from .desired import AudienceRules, DesiredMember, subscriber_hash
from .plan import Acked, Plan, plan_member
from .state import acked_states, address_holders, mailchimp_statuses, profiles, rule_results

CHUNK = 500
"""Profiles planned together: at most one batch-subscribe call's worth."""
IdChunks = Callable[[], Iterator[Sequence[int]]]
"""Gives the profile ids to plan, in chunks (called once per pass)."""


def list_chunks(ids: Sequence[int], size: int = CHUNK) -> IdChunks:
    return lambda: iter(slices(ids, size))


class Planner:
    """Plans one audience's profiles in chunks; `prepare` must run first."""

    def __init__(
        self,
        engine: Engine,
        audience: AudienceConfig,
        ids: IdChunks,
        declared_tags: Sequence[str] = (),
    ) -> None:
        self.engine, self.audience, self.ids = engine, audience, ids
        self.rules = AudienceRules(audience, declared_tags)
        self.departing: dict[int, Acked] = {}
        """Profiles leaving the audience with an acknowledged address: planned last."""
        self._leaving: dict[str, int] = {}
        """Their addresses → the profile."""
        self._invalid: dict[int, str] = {}
        """Profiles of this chunk whose address is not a valid one: skipped, and said so."""
        self.taken: set[str] = set()
        """Addresses of leavers that another profile holds or wants: not archived."""

    def prepare(self) -> Counter[str]:
        """Find the leavers; returns every removal the whole plan makes (see `Plan.removals`)."""
        removals: Counter[str] = Counter()
        movers: dict[int, str] = {}
        for ids in self.ids():
            with self.engine.connect() as conn:
                acked = acked_states(conn, self.audience.name, list(ids))
                known = [pid for pid in ids if pid in acked and acked[pid].email]
                if not known:
                    continue
                desired = self._desire(conn, known)
                staying = []
                for pid in known:
                    wanted = desired.get(pid)
                    if wanted is None:
                        self.departing[pid] = acked[pid]
                        self._leaving[str(acked[pid].email)] = pid
                    elif wanted.email != acked[pid].email:
                        movers[pid] = wanted.email
                    else:  # same address: its plan does not depend on who leaves
                        staying.append(pid)
                if staying:
                    plan = self._plan(conn, staying, desired, acked)
                    removals.update(plan.removals())
        if self.departing:
            with self.engine.connect() as conn:
                holders = address_holders(conn, self.audience.name, self._leaving)
            self.taken = {e for e, pids in holders.items() if pids - set(self.departing)}
        for part in slices([*movers, *sorted(self.departing)], CHUNK):
            removals.update(self.plan_ids(list(part)).removals())
        return removals

    def chunks(self) -> Iterator[Plan]:
        """Plans of everyone but the leavers, a chunk at a time."""
        for ids in self.ids():
            part = [pid for pid in ids if pid not in self.departing]
            if part:
                yield self.plan_ids(part)

    def departures(self) -> Iterator[Plan]:
        """Plans of the leavers (after `chunks`: the addresses others took are known)."""
        for part in slices(sorted(self.departing), CHUNK):
            yield self.plan_ids(list(part))

    def plan_ids(self, ids: list[int]) -> Plan:
        with self.engine.connect() as conn:
            acked = acked_states(conn, self.audience.name, ids)
            return self._plan(conn, ids, self._desire(conn, ids), acked)

    def desired(self, ids: list[int]) -> dict[int, DesiredMember | None]:
        """The member each of these profiles should be (what `segments preview` shows)."""
        with self.engine.connect() as conn:
            return self._desire(conn, ids)

    # ------------------------------------------------------------------ internals

    def _desire(self, conn: Connection, ids: list[int]) -> dict[int, DesiredMember | None]:
        """The member each profile should be (None: not in the audience)."""
        audience, rules = self.audience, self.rules
        found = profiles(conn, ids)
        computed = rule_results(conn, ids)
        desired: dict[int, DesiredMember | None] = {}
        nothing: tuple[Any, ...] = (None, None, None, None)
        for pid, (attributes, deleted) in found.items():
            traits, content, rule_tags, in_segments = computed.get(pid, nothing)
            values = attributes
            if traits or content:  # traits and content rules feed merge fields too
                values = {**attributes, **(traits or {}), **(content or {})}
            segments = frozenset(in_segments or ())
            tags = frozenset(rule_tags or ()) | segments if rule_tags or segments else segments
            outside = audience.segment is not None and audience.segment not in segments
            desired[pid] = None if deleted or outside else rules.desire(pid, values, tags)
            if desired[pid] is None and not deleted and not outside and attributes.get("email"):
                self._invalid[pid] = str(attributes["email"])  # an address that did not clean
        return desired

    def _plan(
        self,
        conn: Connection,
        ids: list[int],
        desired: dict[int, DesiredMember | None],
        acked: dict[int, Acked],
    ) -> Plan:
        hashes = [d.hash for d in desired.values() if d is not None]
        hashes += [subscriber_hash(a.email) for a in acked.values() if a.email]
        statuses = mailchimp_statuses(conn, self.audience.list_id, hashes)
        left_behind: dict[str, Acked] = {}
        for wanted in desired.values():
            holder = self._leaving.get(wanted.email) if wanted is not None else None
            if wanted is not None and holder is not None and holder != wanted.profile_id:
                self.taken.add(wanted.email)  # the address is wanted: its member stays
                left_behind[wanted.email] = self.departing[holder]
        plan = Plan(self.audience)
        taken = frozenset(self.taken)
        for pid in ids:
            plan_member(plan, pid, desired.get(pid), acked.get(pid), statuses, taken, left_behind)
            if pid in self._invalid:
                known = acked.get(pid)
                if known is None or not known.email or known.status in (None, "archived"):
                    plan.skip(self._invalid.pop(pid), "invalid email")
                else:
                    self._invalid.pop(pid)
        return plan


def whole_plan(
    engine: Engine, audience: AudienceConfig, ids: Sequence[int], declared_tags: Sequence[str] = ()
) -> Plan:
    """The plan for these profiles in one piece (the dry run's), planned as the push plans it."""
    planner = Planner(engine, audience, list_chunks(ids), declared_tags)
    planner.prepare()
    plan = Plan(audience)
    for part in (*planner.chunks(), *planner.departures()):
        plan.extend(part)
    plan.respelled = dict(planner.rules.respelled)
    return plan
