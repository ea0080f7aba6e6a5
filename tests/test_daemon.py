"""The daemon's parts without a process: schedules in the config, job leases on both backends,
the admin endpoints' token, the jobs of a setup and a consumer's waiting work. (The daemon as a
process: test_daemon_process.py; several agents on PostgreSQL: test_daemon_agents.py.)"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncbridge.config.loader import parse_config
from syncbridge.daemon import work
from syncbridge.daemon.http import HttpServer, build_app
from syncbridge.daemon.leases import JOBS, JobBoard, job_rows
from syncbridge.errors import ConfigError
from syncbridge.store import journal
from syncbridge.store.bulk import utcnow
from syncbridge.store.tables import Run

from .builders import settings_from

SOURCE = {"name": "crm", "connector": "files",
          "streams": [{"name": "contacts", "mapping": "m.toml"}]}  # fmt: skip


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "config.toml", Path(), {})
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"schedule": "soon"}, "sources[0].schedule: 'soon' is not an interval like 30s, 5m"),
        (
            {"cron": "*/15 * * *"},
            "sources[0].cron: '*/15 * * *' is not a crontab line (minute hour day month weekday): Wrong number of fields",
        ),
        ({"cron": "0 9 * * mnday"}, 'Invalid weekday name "mnday"'),
        (
            {"schedule": "5m", "cron": "* * * * *"},
            "give one of 'schedule' (an interval) or 'cron', not both",
        ),
        ({"schedul": "5m"}, "sources[0]: unknown key 'schedul'; did you mean 'schedule'?"),
        ({"schedule": "0.2s"}, "shorter than one second"),
    ],
)
def test_a_bad_schedule_is_a_config_problem_with_its_key_path(
    source: dict[str, Any], expected: str
) -> None:
    found = problems({"sources": [SOURCE | source]})
    assert any(expected in p for p in found), found


def test_daemon_keys_are_checked_with_a_suggestion() -> None:
    assert any("daemon: unknown key 'flsh_s'; did you mean 'flush_s'?" in p
               for p in problems({"daemon": {"flsh_s": 1}}))  # fmt: skip
    assert any("daemon.http: 'nowhere' is not host:port" in p
               for p in problems({"daemon": {"http": "nowhere"}}))  # fmt: skip


def test_good_schedules_parse() -> None:
    config = parse_config(
        {"sources": [SOURCE | {"schedule": "30s"}, SOURCE | {"name": "shop", "cron": "*/15 * * * *"}],
         "daemon": {"schedule": "90", "admin_token": ""}},
        "config.toml", Path(), {},
    )  # fmt: skip
    assert [s.schedule for s in config.sources] == ["30s", None]
    assert config.daemon.admin_token is None and config.daemon.schedule == "90"


def test_leases_go_to_one_agent_and_move_when_it_stops_renewing(engine: Engine) -> None:
    a, b = JobBoard(engine, 60.0, "host-a pid=1"), JobBoard(engine, 60.0, "host-b pid=2")
    jobs = ["pull:crm", "identity"]
    a.ensure(jobs)
    b.ensure(jobs)
    assert a.acquire(jobs) == set(jobs)
    assert b.acquire(jobs) == set()
    assert a.acquire(jobs) == set(jobs), "a renewal keeps them"
    run_id = _running_run(engine)
    a.started("identity", run_id)
    with engine.begin() as conn:  # a died a while ago: its leases ran out
        conn.execute(JOBS.update().values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert b.acquire(jobs) == set(jobs)
    assert a.acquire(jobs) == set()
    with engine.connect() as conn:
        rows = {r["job"]: r for r in job_rows(conn)}
        status = conn.execute(select(Run.__table__.c.status)).scalar_one()
    assert rows["identity"]["holder"] == "host-b pid=2" and rows["identity"]["lease_live"]
    assert status == "interrupted", "the dead agent's run is marked"
    b.release(jobs)
    assert a.acquire(jobs) == set(jobs), "released leases are taken at once"


def _running_run(engine: Engine) -> int:
    from syncbridge.daemon import runs

    return runs.begin(engine, "identity", "host-a pid=1")


class View:
    def readiness(self) -> dict[str, Any]:
        return {"ready": False, "reasons": ["identity has been failing"]}

    def status(self) -> dict[str, Any]:
        return {"agent": "me", "jobs": {}}

    def run_source(self, source: str) -> tuple[int, dict[str, Any]]:
        return 202, {"job": f"pull:{source}", "queued": True}


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[HttpServer] = []

    def start(token: str | None) -> str:
        server = HttpServer(build_app(View(), token), "127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"http://{server.address}"

    yield start
    for server in servers:
        server.stop()


def call(url: str, token: str | None = None, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_without_a_token_the_admin_endpoints_are_off(serve: Any) -> None:
    base = serve(None)
    assert call(f"{base}/v1/admin/status")[0] == 404
    assert call(f"{base}/v1/admin/run/crm", "anything", "POST")[0] == 404
    status, body = call(f"{base}/readyz")
    assert status == 503 and json.loads(body)["reasons"] == ["identity has been failing"]


def test_the_admin_endpoints_want_the_token(serve: Any) -> None:
    base = serve("s3cret")
    assert call(f"{base}/v1/admin/status")[0] == 401
    assert call(f"{base}/v1/admin/status", "s3cre")[0] == 401
    assert call(f"{base}/v1/admin/status", "s3cret") == (200, '{"agent":"me","jobs":{}}')
    assert call(f"{base}/v1/admin/run/crm", "s3cret", "POST")[0] == 202
    assert call(f"{base}/v1/admin/run/crm", "s3cret")[0] == 405


def test_a_port_in_use_is_a_clear_error() -> None:
    server = HttpServer(build_app(View(), None), "127.0.0.1:0")
    try:
        with pytest.raises(Exception, match=r"cannot listen there .*http = \"\""):
            HttpServer(build_app(View(), None), server.address)
    finally:
        server.sock.close()


def test_the_jobs_of_a_setup_in_pipeline_order(tmp_path: Path) -> None:
    settings = settings_from(
        {"mailchimp": {"api_key": "k-us1", "audiences": [{"name": "all", "list_id": "L"}]}},
        tmp_path,
    )
    names = work.job_names(settings)
    assert names[-3:] == ["identity", "mailchimp:all", "compact"]
    assert all(n.startswith("pull:") for n in names[:-3])


def test_a_consumer_waits_for_the_entries_of_its_kinds(engine: Engine, tmp_path: Path) -> None:
    settings = settings_from({}, tmp_path)
    assert work.waiting(engine, settings, "identity", 500) == 500, "never read: everything"
    with engine.begin() as conn:
        journal.advance(conn, "identity", 0)
        journal.append(conn, journal.RECORD, [1, 2, 3])
        journal.append(conn, journal.PROFILE, [7])
    assert work.waiting(engine, settings, "identity", 500) == 3
    assert work.waiting(engine, settings, "identity", 2) == 2


def test_a_failing_job_backs_off_exponentially_and_a_success_resets_it(
    engine: Engine, tmp_path: Path
) -> None:
    from syncbridge.daemon.service import Daemon, DaemonOptions, JobState

    settings = settings_from({"daemon": {"backoff_max_s": 12}}, tmp_path)
    daemon = Daemon(settings, DaemonOptions())
    daemon.engine, daemon.board = engine, JobBoard(engine, 15.0, "me")
    daemon.board.ensure(["identity"])
    state = JobState()
    waits = []
    for _ in range(4):
        before = time.monotonic()
        daemon._record("identity", state, None, {}, True, "the cache went away", 0.1)
        waits.append(state.retry_at - before)
    expected = [5, 10, 12, 12]
    assert all(w <= got <= w + 3 for w, got in zip(expected, waits, strict=True)), waits
    assert state.failures == 4 and state.failing_since
    with engine.connect() as conn:
        row = next(r for r in job_rows(conn) if r["job"] == "identity")
    assert row["failures"] == 4 and row["last_error"] == "the cache went away"
    daemon._record("identity", state, None, {}, True, None, 0.1)
    assert (state.failures, state.retry_at, state.failing_since) == (0, 0.0, None)
