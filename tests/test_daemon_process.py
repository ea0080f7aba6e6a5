"""`syncbridge daemon` as a real process against the Mailchimp fake and a file source (issue 14):
changes reach Mailchimp within a bound, the HTTP endpoints answer, SIGTERM mid-push keeps the
acknowledged state true, SIGHUP with a broken mapping keeps the old one, and a second daemon on
one SQLite file is refused with exit code 2."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from syncbridge.store.engine import open_engine
from syncbridge.store.tables import MemberState

from .daemons import TOKEN, Daemon, env, eventually, export, first_names, person, write_setup
from .fakes.mailchimp import FakeMailchimp


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    with FakeMailchimp() as server:
        server.add_list("L1")
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cache.db'}"


def test_a_changed_row_reaches_mailchimp_and_the_endpoints_answer(
    tmp_path: Path, fake: FakeMailchimp, sqlite_url: str
) -> None:
    export(tmp_path, [person(1), person(2)])
    daemon = Daemon(write_setup(tmp_path, fake, sqlite_url)).started()
    try:
        eventually(lambda: len(first_names(fake)) == 2, 60, "the first load reached Mailchimp")
        export(tmp_path, [person(1, first_name="Ann"), person(2)])
        took = eventually(
            lambda: first_names(fake).get("person1@gmail.com") == "Ann", 15, "the change arrived"
        )
        assert took < 15
        assert daemon.get("/healthz") == (200, '{"status":"alive"}')
        assert daemon.json("/readyz") == {"ready": True, "reasons": []}
        status, metrics = daemon.get("/metrics")
        assert status == 200
        assert 'syncbridge_job_last_success_timestamp_seconds{job="mailchimp:customers"}' in metrics
        assert 'syncbridge_job_duration_seconds_count{job="pull:crm"}' in metrics
        assert daemon.get("/v1/admin/status")[0] == 401
        assert daemon.get("/v1/admin/status", "wrong")[0] == 401
        jobs = daemon.json("/v1/admin/status", TOKEN)["jobs"]
        assert set(jobs) == {"pull:crm", "identity", "mailchimp:customers", "compact"}
        assert jobs["pull:crm"]["held_here"] and jobs["pull:crm"]["last_status"] == "ok"
        assert daemon.get("/v1/admin/run/crm", TOKEN, "POST") == (
            202, '{"job":"pull:crm","queued":true}'
        )  # fmt: skip
        missing = daemon.json("/v1/admin/run/crn", TOKEN, "POST")
        assert "did you mean 'crm'" in missing["error"]
        shown = subprocess.run(
            [sys.executable, "-c", "from syncbridge.cli import main; main()",
             "status", "--json", "-c", str(tmp_path / "config.toml")],
            env=env(), capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        rows = {row["job"]: row for row in json.loads(shown.stdout)["jobs"]}
        assert rows["pull:crm"]["holder"] == f"{socket.gethostname()} pid={daemon.proc.pid}"
        assert rows["pull:crm"]["next_run_at"] and rows["pull:crm"]["last_status"] in (
            "ok",
            "running",
        )
        assert rows["mailchimp:customers"]["last_success_at"]
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output
    assert "Traceback" not in daemon.output


def acknowledged(url: str) -> dict[str, tuple[str | None, str | None]]:
    engine = open_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(MemberState.__table__)).mappings().all()
    engine.dispose()
    return {r["email"]: (r["status"], (r["merge_fields"] or {}).get("FNAME")) for r in rows}


def test_sigterm_in_the_middle_of_a_push_leaves_acknowledged_state_true(
    tmp_path: Path, sqlite_url: str
) -> None:
    with FakeMailchimp(latency=0.4, max_connections=10) as fake:
        fake.add_list("L1")
        config = write_setup(tmp_path, fake, sqlite_url, schedule="1h")
        config.write_text(
            config.read_text().replace("[mailchimp]\n", "[mailchimp]\nmax_connections = 2\n")
        )
        export(tmp_path, [person(i) for i in range(1, 4001)])  # 8 batches, 2 at a time
        daemon = Daemon(config)
        batches: list[float] = []

        def on_applied(method: str, path: str) -> None:
            if method == "POST" and path == "/3.0/lists/L1":
                batches.append(time.monotonic())
                if len(batches) == 1:
                    daemon.proc.send_signal(signal.SIGTERM)

        fake.on_applied = on_applied
        daemon.started()
        code = daemon.proc.wait(timeout=120)
        fake.on_applied = None
        assert code == 0, daemon.output
        stopped = time.monotonic()
        sent = {m["email_address"]: (m["status"], m["merge_fields"].get("FNAME"))
                for m in fake.members("L1").values()}  # fmt: skip
        acked = acknowledged(sqlite_url)
    assert 0 < len(sent) < 4000, "the stop came in the middle of the push"
    assert stopped - batches[0] < 20
    assert sent == acked, "sent but unacknowledged, or acknowledged but unsent"
    assert "the daemon is stopping" in daemon.output


def test_sighup_with_a_broken_mapping_keeps_the_old_one_and_an_edit_is_picked_up(
    tmp_path: Path, fake: FakeMailchimp, sqlite_url: str
) -> None:
    export(tmp_path, [person(1)])
    daemon = Daemon(write_setup(tmp_path, fake, sqlite_url)).started()
    try:
        eventually(lambda: first_names(fake) == {"person1@gmail.com": "P1"}, 60, "first load")
        mapping = tmp_path / "mapping.toml"
        good = mapping.read_text()
        mapping.write_text(good.replace('first_name = "first_name"', 'first_name = { fild = "x" }'))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(r"reload \(SIGHUP\) failed, the previous setup stays in use: .*mapping")
        export(tmp_path, [person(1, first_name="Still mapped")])
        eventually(
            lambda: first_names(fake)["person1@gmail.com"] == "Still mapped", 20,
            "the old mapping kept working",
        )  # fmt: skip
        mapping.write_text(good.replace('first_name = "first_name"', 'first_name = "email"'))
        daemon.wait_for(r"reloaded .* \(a file changed\)", 20)
        eventually(
            lambda: first_names(fake)["person1@gmail.com"] == "person1@gmail.com", 20,
            "the edited mapping re-mapped the stored record without a restart",
        )  # fmt: skip
    finally:
        assert daemon.stop() == 0, daemon.output


def test_a_second_daemon_or_run_on_one_sqlite_file_exits_2_naming_the_first(
    tmp_path: Path, fake: FakeMailchimp, sqlite_url: str
) -> None:
    export(tmp_path, [person(1)])
    config = write_setup(tmp_path, fake, sqlite_url)
    first = Daemon(config).started()
    try:
        second = Daemon(config)
        assert second.proc.wait(timeout=90) == 2, second.output
        flat = " ".join(second.output.split())
        assert f"(pid {first.proc.pid} on" in flat and "`daemon`" in flat, flat
        assert "a daemon keeps the cache for as long as it runs" in flat
        once = subprocess.run(
            [sys.executable, "-c", "from syncbridge.cli import main; main()",
             "run", "--once", "-c", str(config)],
            env=env(), capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert once.returncode == 2, once.stderr
        assert f"pid {first.proc.pid}" in " ".join(once.stderr.split())
    finally:
        assert first.stop() == 0, first.output


def test_an_event_posted_to_the_intake_reaches_mailchimp(
    tmp_path: Path, fake: FakeMailchimp, sqlite_url: str
) -> None:
    """Issue 15: an identify call through the daemon's intake changes the person's profile,
    and the change is pushed like any other; the intake source is never pulled."""
    events = Path(__file__).resolve().parents[1] / "mappings" / "events.toml"
    intake = f"""
[intake]
write_keys = ["wk_daemon_test_key"]
[[sources]]
name = "web"
connector = "intake"
streams = [{{ name = "events", mapping = "{events}" }}]
"""
    export(tmp_path, [person(1), person(2)])
    daemon = Daemon(write_setup(tmp_path, fake, sqlite_url, extra=intake)).started()
    try:
        daemon.wait_for(r"event intake on http://")
        eventually(lambda: len(first_names(fake)) == 2, 60, "the first load reached Mailchimp")
        body = {"type": "identify", "userId": "c1", "messageId": "m-1",
                "traits": {"email": "person1@gmail.com", "firstName": "Evie"}}  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{daemon.port}/v1/identify", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": "Basic " + base64.b64encode(b"wk_daemon_test_key:").decode()},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        eventually(lambda: first_names(fake).get("person1@gmail.com") == "Evie", 20,
                   "the identify call's first name arrived")  # fmt: skip
        jobs = daemon.json("/v1/admin/status", TOKEN)["jobs"]
        assert "pull:web" not in jobs and "pull:crm" in jobs
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output
    assert "Traceback" not in daemon.output
