"""Several daemons on one PostgreSQL cache (issue 14, point 5): they share the jobs by leases, so
two never push the same audience at once — seen in the Mailchimp fake's call log, by each
call's User-Agent and time — and when the active agent is killed, the other takes over."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import POSTGRES_URL, _reset_postgres
from .daemons import Daemon, eventually, export, first_names, person, write_setup
from .fakes.mailchimp import FakeMailchimp

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("SYNCBRIDGE_TEST_POSTGRES_URL is not set")
    _reset_postgres(POSTGRES_URL)
    yield POSTGRES_URL


def agent_of(user_agent: str) -> int | None:
    match = re.search(r"pid=(\d+)", user_agent)
    return int(match[1]) if match else None


def overlaps(timeline: list[tuple[str, str, str, float, float]]) -> list[tuple[object, ...]]:
    """Calls of different agents in flight at the same moment."""
    calls = sorted((start, end, agent_of(ua)) for ua, _m, _p, start, end in timeline)
    found = []
    for i, (start, end, agent) in enumerate(calls):
        for other_start, _other_end, other in calls[i + 1 :]:
            if other_start >= end:
                break
            if other != agent:
                found.append((agent, other, start, other_start))
    return found


def test_two_agents_never_push_at_once_and_a_killed_one_is_replaced(
    tmp_path: Path, postgres_url: str
) -> None:
    with FakeMailchimp(latency=0.05) as fake:
        fake.add_list("L1")
        export(tmp_path, [person(i) for i in range(1, 6)])
        config = write_setup(tmp_path, fake, postgres_url)
        first = Daemon(config).started()
        daemons = {first.proc.pid: first}
        try:
            second = Daemon(config).started()
            daemons[second.proc.pid] = second
            eventually(lambda: len(first_names(fake)) == 5, 60, "the first load")
            for n in range(3):
                export(tmp_path, [person(1, first_name=f"Ann{n}"), *map(person, range(2, 6))])
                eventually(lambda n=n: first_names(fake)["person1@gmail.com"] == f"Ann{n}",
                           20, f"change {n}")  # fmt: skip
            assert overlaps(fake.timeline) == [], "two agents pushed at the same time"
            pushers = {agent_of(ua) for ua, *_ in fake.timeline}
            assert len(pushers) == 1 and pushers <= set(daemons), pushers
            active = pushers.pop()
            standby = next(d for pid, d in daemons.items() if pid != active)
            daemons[active].kill()  # SIGKILL: no lease released
            killed_at = len(fake.timeline)
            export(tmp_path, [person(1, first_name="After"), *map(person, range(2, 6))])
            took = eventually(lambda: first_names(fake)["person1@gmail.com"] == "After", 30,
                              "the standby took over")  # fmt: skip
            assert took < 4 + 10  # one lease period (lease_s = 4), then a pull and a push
            later = {agent_of(ua) for ua, *_ in fake.timeline[killed_at:]}
            assert later == {standby.proc.pid}
            standby.wait_for(r"took over job mailchimp:customers")
            assert overlaps(fake.timeline) == []
        finally:
            for daemon in daemons.values():
                if daemon.proc.poll() is None:
                    assert daemon.stop() == 0, daemon.output
