"""The remote-API layer (issue 12, point 4): the retry table, Retry-After, renewal, the shared
connection limit, paging helpers and the call log, against a loopback server.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from syncbridge_connectors.salesforce import POLICY_TABLE as SALESFORCE_TABLE

from syncbridge.errors import AuthError, FatalError, RetriableError
from syncbridge.push.client import POLICY_TABLE as MAILCHIMP_TABLE
from syncbridge.remote import (
    CONNECTION,
    TIMEOUT,
    Action,
    Failure,
    Remote,
    RetryPolicy,
    cursor_pages,
    offset_items,
    offset_pages,
    retry_after_s,
)

from .fakes.http import LoopbackFake

log = logging.getLogger("tests.remote")


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    delay_s: float = 0.0


class Server(LoopbackFake):
    """Answers from a script (then 200), counting requests and how many were in flight at once."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.script: list[Answer] = []
        self.latency_s = latency_s
        self.requests: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Answer:
        with self._lock:
            self.requests.append(f"{method} {target}")
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            answer = self.script.pop(0) if self.script else Answer()
        time.sleep(self.latency_s + answer.delay_s)
        with self._lock:
            self.in_flight -= 1
        return answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as fake:
        yield fake


def remote(attempts: int = 4, **kwargs: Any) -> Remote:
    policy = RetryPolicy(MAILCHIMP_TABLE, attempts=attempts, backoff_s=0.001)
    return Remote("Test", policy, log, **kwargs)


def get(r: Remote, url: str) -> int:
    return r.call(lambda: r.request("GET", url).status_code)


# ------------------------------------------------------------------ the policy table


@pytest.mark.parametrize(
    ("failure", "table", "action"),
    [
        (Failure("", status=429), MAILCHIMP_TABLE, Action.RETRY),
        (Failure("", status=500), MAILCHIMP_TABLE, Action.RETRY),
        (Failure("", status=503), MAILCHIMP_TABLE, Action.RETRY),
        (Failure("", network=TIMEOUT), MAILCHIMP_TABLE, Action.RETRY),
        (Failure("", network=CONNECTION), MAILCHIMP_TABLE, Action.RETRY),
        (Failure("", status=401), MAILCHIMP_TABLE, Action.AUTH),
        (Failure("", status=403), MAILCHIMP_TABLE, Action.AUTH),
        (Failure("", status=400), MAILCHIMP_TABLE, Action.FATAL),
        (Failure("", status=404), MAILCHIMP_TABLE, Action.FATAL),
        (Failure("", status=None), MAILCHIMP_TABLE, Action.FATAL),
        (Failure("", status=401, code="INVALID_SESSION_ID"), SALESFORCE_TABLE, Action.RENEW),
        (Failure("", status=403, code="REQUEST_LIMIT_EXCEEDED"), SALESFORCE_TABLE, Action.RETRY),
        (Failure("", status=403, code="INSUFFICIENT_ACCESS"), SALESFORCE_TABLE, Action.AUTH),
        (Failure("", status=400, code="INVALID_FIELD"), SALESFORCE_TABLE, Action.FATAL),
        (Failure("", status=502), SALESFORCE_TABLE, Action.RETRY),
    ],
)  # fmt: skip
def test_policy_table_maps_each_outcome_to_its_action(
    failure: Failure, table: dict[int | str, Action], action: Action
) -> None:
    assert RetryPolicy(table).action(failure) is action


def test_server_errors_are_retried_until_they_pass(server: Server) -> None:
    server.script = [Answer(503), Answer(500), Answer(429)]
    assert get(remote(), f"{server.url}/x") == 200
    assert len(server.requests) == 4


def test_a_refused_key_stops_at_once(server: Server) -> None:
    server.script = [Answer(401)]
    with pytest.raises(AuthError):
        get(remote(), f"{server.url}/x")
    assert len(server.requests) == 1


def test_other_client_errors_stop_without_retrying(server: Server) -> None:
    server.script = [Answer(404), Answer(200)]
    with pytest.raises(FatalError, match="404"):
        get(remote(), f"{server.url}/x")
    assert len(server.requests) == 1


def test_attempts_are_bounded_and_the_last_error_is_raised(server: Server) -> None:
    server.script = [Answer(503)] * 5
    with pytest.raises(RetriableError, match="Test GET /x: 503"):
        get(remote(attempts=3), f"{server.url}/x")
    assert len(server.requests) == 3


def test_resets_and_timeouts_are_retried(server: Server) -> None:
    server.script = [Answer(reset=True), Answer(delay_s=1.0)]
    assert get(remote(timeout_s=0.3), f"{server.url}/x") == 200
    assert len(server.requests) == 3


# ------------------------------------------------------------------ Retry-After


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert retry_after_s("2.5") == 2.5
    assert retry_after_s("-3") == 0.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_s(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


def test_retry_after_is_waited_for(server: Server) -> None:
    server.script = [Answer(429, headers={"Retry-After": "0.4"})]
    started = time.monotonic()
    assert get(remote(), f"{server.url}/x") == 200
    assert time.monotonic() - started >= 0.4  # the backoff alone would be a millisecond


def test_retry_after_is_capped(server: Server) -> None:
    server.script = [Answer(503, headers={"Retry-After": "3600"})]
    policy = RetryPolicy(MAILCHIMP_TABLE, attempts=2, backoff_s=0.001, retry_after_max_s=0.2)
    r = Remote("Test", policy, log)
    started = time.monotonic()
    assert get(r, f"{server.url}/x") == 200
    assert 0.2 <= time.monotonic() - started < 5


# ------------------------------------------------------------------ renewal


class Expired(Exception):
    """What a client library raises for an expired session."""


def renewing_remote(attempts: int = 4) -> Remote:
    def classify(exc: BaseException, what: str) -> Failure | None:
        return (
            Failure(f"session refused ({what})", status=401) if isinstance(exc, Expired) else None
        )

    policy = RetryPolicy({401: Action.RENEW}, attempts=attempts, backoff_s=0.001)
    return Remote("Test", policy, log, classify=classify)


def test_an_expired_session_is_renewed_once_and_the_call_repeated() -> None:
    sessions = iter(["old", "new"])
    current = [next(sessions)]

    def work() -> str:
        if current[0] == "old":
            raise Expired
        return current[0]

    renewals: list[int] = []

    def renew() -> None:
        renewals.append(1)
        current[0] = next(sessions)

    assert renewing_remote().call(work, "q", renew) == "new"
    assert renewals == [1]


def test_a_session_refused_again_after_renewal_stops() -> None:
    tries: list[int] = []
    renewals: list[int] = []

    def work() -> None:
        tries.append(1)
        raise Expired

    with pytest.raises(AuthError, match=r"session refused \(q\)"):
        renewing_remote().call(work, "q", lambda: renewals.append(1))
    assert (len(tries), len(renewals)) == (2, 1)  # no retries with backoff on top


def test_without_a_way_to_renew_an_expired_session_stops() -> None:
    with pytest.raises(AuthError):
        renewing_remote().call(lambda: (_ for _ in ()).throw(Expired), "q")


def test_an_unclassified_exception_passes_through_untouched() -> None:
    with pytest.raises(KeyError):
        renewing_remote().call(lambda: {}["missing"])


# ------------------------------------------------------------------ the connection limit


def test_the_connection_limit_is_shared_by_all_threads() -> None:
    with Server(latency_s=0.05) as server:
        r = remote(max_connections=3)
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(lambda _: get(r, f"{server.url}/x"), range(24)))
        assert statuses == [200] * 24
        assert server.most_in_flight == 3
        # the same burst on the session alone goes past it: the server counts truly
        server.most_in_flight = 0
        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(lambda _: r.session.get(f"{server.url}/x"), range(24)))
        assert server.most_in_flight > 3


def test_a_nested_call_takes_no_second_slot(server: Server) -> None:
    r = remote(max_connections=1)
    assert r.call(lambda: r.call(lambda: r.request("GET", f"{server.url}/x").status_code)) == 200


# ------------------------------------------------------------------ paging


def pages_of(total: int, items: int, reported_total: int | None = None) -> tuple[Any, list[int]]:
    offsets: list[int] = []

    def fetch(count: int, offset: int) -> dict[str, Any]:
        offsets.append(offset)
        shown = list(range(offset, min(offset + count, items)))
        return {"things": shown, "total_items": reported_total or total}

    return fetch, offsets


def test_offset_paging_stops_at_total_items() -> None:
    fetch, offsets = pages_of(2500, 2500)
    assert list(offset_items(fetch, 1000, "things")) == list(range(2500))
    assert offsets == [0, 1000, 2000]


def test_offset_paging_of_an_exact_multiple_asks_no_extra_page() -> None:
    fetch, offsets = pages_of(2000, 2000)
    assert [len(p) for p in offset_pages(fetch, 1000, "things")] == [1000, 1000]
    assert offsets == [0, 1000]


def test_offset_paging_stops_at_an_empty_page_whatever_the_total_says() -> None:
    fetch, offsets = pages_of(10_000, 1500)
    assert len(list(offset_items(fetch, 1000, "things"))) == 1500
    assert offsets == [0, 1000, 2000]


def test_cursor_paging_follows_the_cursor_lazily() -> None:
    chain = {None: ("a", "c1"), "c1": ("b", "c2"), "c2": ("c", None)}
    asked: list[str | None] = []

    def fetch(cursor: str | None) -> tuple[str, str | None]:
        asked.append(cursor)
        return chain[cursor]

    pages = cursor_pages(fetch)
    assert next(pages) == "a" and asked == [None]
    assert list(pages) == ["b", "c"]
    assert asked == [None, "c1", "c2"]


# ------------------------------------------------------------------ the call log


CALL = re.compile(r"Test (GET|POST) (/\S*) -> (\S+) in \d+ ms \(attempt (\d+)\)")


def test_each_call_is_logged_without_query_secret_or_email(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [Answer(503)]
    r = remote(base_path="/3.0")
    url = f"{server.url}/3.0/lists/L1/members/ann%40example.com?email=bob@example.com&key=S3CRET"
    with caplog.at_level(logging.DEBUG, logger="tests.remote"):
        r.call(lambda: r.request("GET", url, auth=("user", "PASSW0RD")))
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "tests.remote"]
    calls = [CALL.fullmatch(line) for line in lines if line.startswith("Test GET")]
    assert [(m.group(2), m.group(3), m.group(4)) for m in calls if m] == [
        ("/lists/L1/members/<email>", "503", "1"),
        ("/lists/L1/members/<email>", "200", "2"),
    ]
    text = "\n".join(lines)
    for leak in ("@", "%40", "S3CRET", "PASSW0RD", "?", "127.0.0.1"):
        assert leak not in text


def test_a_network_error_is_logged_by_its_name(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [Answer(reset=True)]
    r = remote()
    with caplog.at_level(logging.DEBUG, logger="tests.remote"):
        get(r, f"{server.url}/x")
    outcomes = [m.group(3) for rec in caplog.records if (m := CALL.fullmatch(rec.getMessage()))]
    assert outcomes == ["ConnectionError", "200"]


def test_the_attempt_can_be_shown_on_retries_only(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [Answer(500)]
    r = remote(always_show_attempt=False)
    with caplog.at_level(logging.DEBUG, logger="tests.remote"):
        get(r, f"{server.url}/x")
    lines = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("Test GET")]
    assert [line.split(" ms")[1] for line in lines] == ["", " (attempt 2)"]


def test_a_session_given_keeps_its_adapters_and_gets_the_default_timeout() -> None:
    seen: list[Any] = []

    class Recording(requests.adapters.BaseAdapter):
        def send(self, request: Any, **kwargs: Any) -> requests.Response:
            seen.append(kwargs.get("timeout"))
            response = requests.Response()
            response.status_code, response.url = 204, str(request.url)
            return response

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("https://api.example/", Recording())
    r = remote(session=session, timeout_s=7.0)
    assert get(r, "https://api.example/ping") == 204
    assert r.session.get("https://api.example/ping", timeout=2).status_code == 204
    assert seen == [7.0, 2]


def test_a_forked_child_sends_on_connections_of_its_own() -> None:
    """A producer process must not answer for the parent's keep-alive socket: the server sees
    the child's request on a connection the parent never used."""
    import http.server
    import multiprocessing

    peers: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the parent's connection stays pooled

        def do_GET(self) -> None:
            peers.append(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ping"
    remote = Remote("Test", RetryPolicy(MAILCHIMP_TABLE, attempts=1), logging.getLogger("t"))
    try:
        remote.session.get(url)
        remote.session.get(url)
        assert peers[0] == peers[1]  # one pooled connection in the parent

        def child() -> None:
            remote.session.get(url)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(30)
        assert process.exitcode == 0
        assert len(peers) == 3 and peers[2] != peers[0]
        remote.session.get(url)  # and the parent's own connection still works
        assert peers[3] == peers[0]
    finally:
        server.shutdown()
        server.server_close()
