"""Failure alerts (issue 14, point 6): a JSON POST when a job fails N times in a row and once
when it recovers, delivered by a receiver on 127.0.0.1; retried briefly, never blocking the
job, never carrying a secret or an email; the config keys validated; `run --every` wired."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from syncbridge.alerts import AlertState
from syncbridge.config.loader import ConfigError
from syncbridge.errors import FatalError
from syncbridge.redaction import register_secret

from .builders import settings_from


class Receiver(ThreadingHTTPServer):
    """Takes alert POSTs on 127.0.0.1; can answer 500 to the first few, or be slow."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_first = 0
        self.delay_s = 0.0
        self.got = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/syncbridge"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.got:
            self.got.wait_for(lambda: len(self.bodies) >= n, timeout)
        return list(self.bodies)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        server.attempts += 1
        time.sleep(server.delay_s)
        if server.attempts <= server.fail_first:
            self.send_response(500)
            self.end_headers()
            return
        with server.got:
            server.bodies.append(json.loads(body))
            server.got.notify_all()
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_alerts_after_n_failures_in_a_row_once_and_once_on_recovery(receiver: Receiver) -> None:
    alerts = AlertState(receiver.url, after=3)
    alerts.record("pull:crm", False, FatalError("crm/contacts: the export went missing"))
    alerts.record("pull:crm", False, FatalError("crm/contacts: the export went missing"))
    alerts.record("pull:crm", True)  # a success in between: the count starts over
    outcomes = [alerts.record("pull:crm", False, f"failure {i}") for i in range(1, 6)]
    assert [o and o["status"] for o in outcomes] == [None, None, "failing", None, None]
    recovered = alerts.record("pull:crm", True)
    assert alerts.record("pull:crm", True) is None
    alerts.close()

    bodies = receiver.wait_for(2)
    assert [b["status"] for b in bodies] == ["failing", "recovered"]
    failing, back = bodies
    assert failing["job"] == "pull:crm" and failing["failures"] == 3
    assert failing["last_error"] == "failure 3"
    assert set(failing) == {"job", "status", "failures", "last_error", "at"}
    assert back == recovered and back["failures"] == 5 and back["last_error"] == "failure 5"
    assert receiver.attempts == 2


def test_jobs_are_counted_apart(receiver: Receiver) -> None:
    alerts = AlertState(receiver.url, after=2)
    alerts.record("pull:crm", False, "down")
    alerts.record("pull:shop", False, "down")
    alerts.record("pull:shop", True)
    assert alerts.record("pull:crm", False, "down") is not None
    alerts.close()
    assert [b["job"] for b in receiver.wait_for(1)] == ["pull:crm"]


def test_a_refused_delivery_is_retried_briefly(receiver: Receiver) -> None:
    receiver.fail_first = 2
    alerts = AlertState(receiver.url, after=1, backoff_s=0.01)
    alerts.record("destination:mailchimp:customers", False, "Mailchimp 503")
    alerts.close()
    assert [b["status"] for b in receiver.wait_for(1)] == ["failing"]
    assert receiver.attempts == 3


def test_an_unreachable_webhook_gives_up_with_a_warning_that_hides_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "http://127.0.0.1:9/hooks/T000/B000/XXXXsecretXXXX"  # the discard port: refused
    alerts = AlertState(url, after=1, attempts=2, backoff_s=0.01)
    alerts.record("cycle", False, "boom")
    alerts.close(timeout=10)
    assert "alert webhook did not take the failing alert of job cycle" in caplog.text
    assert "XXXXsecretXXXX" not in caplog.text


def test_recording_never_waits_for_the_webhook(receiver: Receiver) -> None:
    receiver.delay_s = 2.0
    alerts = AlertState(receiver.url, after=1)
    started = time.perf_counter()
    alerts.record("cycle", False, "boom")
    alerts.record("cycle", True)
    assert time.perf_counter() - started < 0.5
    alerts.close(timeout=10)
    assert [b["status"] for b in receiver.wait_for(2)] == ["failing", "recovered"]


def test_an_alert_carries_no_secret_and_no_email(receiver: Receiver) -> None:
    register_secret("sk-live-0123456789abcdef")
    alerts = AlertState(receiver.url, after=1)
    error = FatalError(
        "Mailchimp 401 API Key Invalid for key sk-live-0123456789abcdef; ann.lee@yahoo.com " * 20
    )
    alerts.record("cycle", False, error)
    alerts.close()
    (body,) = receiver.wait_for(1)
    text = json.dumps(body)
    assert "sk-live-0123456789abcdef" not in text and "***" in text
    assert "@" not in text and "<email>" in text
    assert len(body["last_error"]) <= 500


def test_config_keys_are_validated(tmp_path: Path) -> None:
    settings = settings_from({}, tmp_path)
    assert settings.config.daemon.alert_after == 3
    assert settings.config.daemon.alert_webhook is None
    hooked = settings_from({"daemon": {"alert_webhook": "https://hooks.example.org/T1/sekrit"}},
                           tmp_path)  # fmt: skip
    assert "sekrit" not in repr(hooked.config.daemon)
    for bad, where in (
        ({"alert_webhook": "ftp://hooks.example.org/x"}, "daemon.alert_webhook"),
        ({"alert_webhook": "hooks.example.org/sekrit"}, "daemon.alert_webhook"),
        ({"alert_after": 0}, "daemon.alert_after"),
        ({"alert_afterr": 2}, "daemon"),
    ):
        with pytest.raises(ConfigError) as caught:
            settings_from({"daemon": bad}, tmp_path)
        assert where in str(caught.value), caught.value
        assert "sekrit" not in str(caught.value)


def test_the_daemon_alerts_on_a_failing_job_and_its_recovery(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Each job outcome the daemon records reaches the alerts; a stop's abandoned run does not."""
    from syncbridge.daemon.leases import JobBoard
    from syncbridge.daemon.service import Daemon, DaemonOptions, JobState
    from syncbridge.store.engine import open_engine

    data = {"store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
            "daemon": {"alert_webhook": receiver.url, "alert_after": 2}}  # fmt: skip
    daemon = Daemon(settings_from(data, tmp_path), DaemonOptions())
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    daemon.engine, daemon.board = engine, JobBoard(engine, 15.0, "me")
    daemon.board.ensure(["pull:crm"])
    state = JobState()
    for error in ("crm/contacts: the export went missing", "crm/contacts: the export went missing",
                  None):  # fmt: skip
        daemon._record("pull:crm", state, None, {}, True, error, 0.1)
    daemon.alerts.close()
    bodies = receiver.wait_for(2)
    assert [(b["job"], b["status"], b["failures"]) for b in bodies] == [
        ("pull:crm", "failing", 2), ("pull:crm", "recovered", 2)]  # fmt: skip
    assert bodies[0]["last_error"] == "crm/contacts: the export went missing"
    engine.dispose()
