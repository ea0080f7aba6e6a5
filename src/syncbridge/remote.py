"""One layer for every remote API: pooled session, timeouts, retry table, connection limit,
paging helpers and a debug line per HTTP call.

Remote APIs differ in a few things only, and here those are data or small hooks:

- a `RetryPolicy`: a table from an outcome to an `Action`. An outcome is an API's own error
  code (Salesforce's `REQUEST_LIMIT_EXCEEDED`), an HTTP status (`401`), a status class
  (`"5xx"`) or a network error kind (`TIMEOUT`, `CONNECTION`), looked up in that order. RETRY
  backs off (exponential with jitter, or the server's `Retry-After`, capped); RENEW logs in
  again and repeats the call once; AUTH and FATAL stop the run (`AuthError`, `FatalError` or
  the API's own error);
- a `classify(exc, what)` hook: what an exception of the API's client library comes to, as a
  `Failure` (None: not a remote failure, raised as it is);
- an `error(failure, action)` hook: the API's own error for a failure that stops the run.

`Remote.call(work)` runs any callable (an SDK method, a simple-salesforce query, a raw
request) within the connection limit shared by all threads, under the policy. Every HTTP
request made on the remote's session, by whatever library, is logged at DEBUG by an adapter
wrapped around the session's own: method, path (never the query string: a search or a SOQL
`where` may hold an email, a pre-signed URL its signature; path segments holding an address
are masked), status or network error, milliseconds and the attempt. A work must not call
`call` of its own remote again except from the same thread (that nested call takes no second
slot).

`offset_pages` / `offset_items` walk `count`/`offset` pages (Mailchimp); `cursor_pages` walks
pages that name the next one (Salesforce's `nextRecordsUrl`, the Bulk API's `Sforce-Locator`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from . import metrics
from .errors import AuthError, FatalError, RetriableError, SyncbridgeError

T = TypeVar("T")
P = TypeVar("P")
C = TypeVar("C")
TIMEOUT = "timeout"
CONNECTION = "connection"


class Action(StrEnum):
    RETRY = "retry"
    RENEW = "renew"
    AUTH = "auth"
    FATAL = "fatal"


TRANSIENT: Mapping[int | str, Action] = {
    429: Action.RETRY, "5xx": Action.RETRY, TIMEOUT: Action.RETRY, CONNECTION: Action.RETRY,
}  # fmt: skip
"""What every API retries: too many requests, server errors, timeouts, resets."""


@dataclass(frozen=True)
class Failure:
    """One failed call in the policy's terms; `body` is the answer's text, for the API's error."""

    message: str
    status: int | None = None
    code: str | None = None
    network: str | None = None
    retry_after: float | None = None
    body: Any = None
    url: str | None = None


class CallFailed(Exception):
    """Raised inside a call (by `Remote.request`) to hand a failure to the policy."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class RetryPolicy:
    """The table from outcome to action, and how long and how often to retry."""

    table: Mapping[int | str, Action] = field(default_factory=lambda: dict(TRANSIENT))
    default: Action = Action.FATAL
    attempts: int = 5
    """Tries in all, the first included."""
    backoff_s: float = 0.5
    """The first retry waits up to this long (random), doubling each time up to `backoff_max_s`."""
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0
    """A server's `Retry-After` is honoured up to this long."""

    def action(self, failure: Failure) -> Action:
        status = failure.status
        for key in (failure.code, status, f"{status // 100}xx" if status else None,
                    failure.network):  # fmt: skip
            if key is not None and key in self.table:
                return self.table[key]
        return self.default

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetriableError) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_max_s)
        return float(
            wait_random_exponential(multiplier=self.backoff_s, max=self.backoff_max_s)(state)
        )


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds, given as seconds or as an HTTP date (None: absent, unreadable)."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


Classify = Callable[[BaseException, str], Failure | None]
ErrorFor = Callable[[Failure, Action], SyncbridgeError | None]


class Remote:
    """One remote API's session, limit, policy and call log (see the module docstring).

    A session given is used with its own adapters (a test's routing stays); one made here gets
    an adapter whose pool holds `max_connections` connections. `timeout_s` applies to every
    request that sets none."""

    def __init__(
        self,
        name: str,
        policy: RetryPolicy,
        log: logging.Logger,
        *,
        max_connections: int = 10,
        timeout_s: float | None = 120.0,
        session: requests.Session | None = None,
        base_path: str = "",
        classify: Classify | None = None,
        error: ErrorFor | None = None,
        always_show_attempt: bool = True,
    ) -> None:
        self.name, self.policy, self.log = name, policy, log
        self.max_connections, self.timeout_s = max_connections, timeout_s
        self.base_path = base_path.rstrip("/")
        self.classify, self.error = classify, error
        self.always_show_attempt = always_show_attempt
        self.slots = threading.BoundedSemaphore(max_connections)
        self._local = threading.local()
        if session is None:
            session = requests.Session()
            pooled = HTTPAdapter(pool_connections=1, pool_maxsize=max_connections)
            session.mount("https://", pooled)
            session.mount("http://", pooled)
        for prefix, adapter in list(session.adapters.items()):
            session.adapters[prefix] = _Logged(adapter, self)
        self.session = session
        _fresh_connections_after_fork(session)

    # ------------------------------------------------------------------ calls

    def call(
        self, work: Callable[[], T], what: str = "", renew: Callable[[], None] | None = None
    ) -> T:
        """`work()` within the connection limit and under the policy. `what` names the call for
        the API's classify hook; `renew` (log in again) is called once when the policy says
        RENEW, then `work` is repeated. Raises RetriableError once the attempts are used up."""
        if getattr(self._local, "holding", False):  # a nested call: this thread has its slot
            return self._once(work, what, renew)
        retrying = Retrying(
            retry=retry_if_exception_type(RetriableError),
            stop=stop_after_attempt(max(1, self.policy.attempts)),
            wait=self.policy.wait,
            reraise=True,
            before_sleep=self._before_retry,
        )
        for attempt in retrying:
            with attempt, self.slots:
                self._local.attempt = attempt.retry_state.attempt_number
                self._local.holding = True
                try:
                    return self._once(work, what, renew)
                finally:
                    self._local.holding = False
                    self._local.attempt = 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _before_retry(self, state: RetryCallState) -> None:
        self.log.warning(
            "%s: retrying after %s", self.name, state.outcome.exception() if state.outcome else "?"
        )
        metrics.api_retry(self.name, getattr(self._local, "reason", "other"))

    def _once(self, work: Callable[[], T], what: str, renew: Callable[[], None] | None) -> T:
        renewed = False
        while True:
            try:
                return work()
            except Exception as exc:
                failure = self.failure_of(exc, what)
                if failure is None:
                    raise
                action = self.policy.action(failure)
                if action is Action.RENEW and renew is not None and not renewed:
                    renew()
                    renewed = True
                    continue
                if action is Action.RETRY:
                    self._local.reason = _reason(failure)
                raise self._error(failure, action) from None

    def failure_of(self, exc: BaseException, what: str = "") -> Failure | None:
        """What an exception comes to: ours (CallFailed), a network error, or the API's hook."""
        if isinstance(exc, CallFailed):
            return exc.failure
        if isinstance(exc, SyncbridgeError):
            return None
        kind = _network_kind(exc)
        if kind is not None:
            return Failure(f"{self.name} unreachable: {type(exc).__name__}", network=kind)
        return self.classify(exc, what) if self.classify is not None else None

    def _error(self, failure: Failure, action: Action) -> SyncbridgeError:
        if action is Action.RETRY:
            return RetriableError(failure.message, failure.retry_after)
        own = self.error(failure, action) if self.error is not None else None
        if own is not None:
            return own
        return FatalError(failure.message) if action is Action.FATAL else AuthError(failure.message)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request on the session; an error status or a network error raises CallFailed
        (for `call` to act on), with the server's `Retry-After` and the answer's text."""
        kwargs.setdefault("timeout", self.timeout_s)
        where = f"{self.name} {method} {self.path_of(url)}"
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            kind = _network_kind(exc)
            if kind is None:
                raise
            raise CallFailed(
                Failure(f"{where}: {type(exc).__name__}", network=kind, url=url)
            ) from None
        if response.status_code >= 400:
            raise CallFailed(
                Failure(
                    f"{where}: {response.status_code}", status=response.status_code,
                    retry_after=retry_after_s(response.headers.get("Retry-After")),
                    body=response.text, url=url,
                )
            )  # fmt: skip
        return response

    # ------------------------------------------------------------------ the call log

    def path_of(self, url: str) -> str:
        """The path to show: no scheme, host or query string, the API's base path cut off,
        a segment holding an email address masked."""
        path = urlsplit(url).path or "/"
        marker = f"{self.base_path}/" if self.base_path else ""
        if marker and marker in path:
            path = "/" + path.split(marker, 1)[1]
        return "/".join("<email>" if "@" in p or "%40" in p.lower() else p for p in path.split("/"))

    def count_call(self, method: str, url: str, outcome: int | str, started: float) -> None:
        """The request in `metrics` (by endpoint template: see `metrics.endpoint_of`)."""
        seconds = time.perf_counter() - started
        metrics.api_call(self.name, method, self.path_of(url), outcome, seconds)

    def log_call(self, method: str, url: str, outcome: int | str, started: float) -> None:
        if not self.log.isEnabledFor(logging.DEBUG):
            return
        ms = (time.perf_counter() - started) * 1000
        attempt = getattr(self._local, "attempt", 1)
        line = "%s %s %s -> %s in %.0f ms"
        args: list[Any] = [self.name, method, self.path_of(url), outcome, ms]
        if self.always_show_attempt or attempt > 1:
            line += " (attempt %d)"
            args.append(attempt)
        self.log.debug(line, *args)


def _fresh_connections_after_fork(session: requests.Session) -> None:
    """A forked producer process opens connections of its own instead of sending on the
    keep-alive sockets it inherited: the parent still holds them, and a child killed in the
    middle of a response would leave the parent a socket with half an answer on it. Dropping
    the child's copies closes only its file descriptors (no TLS close_notify is sent)."""
    reference = weakref.ref(session)

    def forget() -> None:
        alive = reference()
        if alive is None:
            return
        for adapter in alive.adapters.values():
            inner = getattr(adapter, "inner", adapter)
            manager = getattr(inner, "poolmanager", None)
            if manager is not None:
                manager.clear()

    os.register_at_fork(after_in_child=forget)


class _Logged(BaseAdapter):
    """Wraps a session's adapter: the remote's default timeout, and one debug line per request."""

    def __init__(self, inner: BaseAdapter, remote: Remote) -> None:
        super().__init__()
        self.inner, self.remote = inner, remote

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        method, url = str(request.method), str(request.url)
        if timeout is None:
            timeout = self.remote.timeout_s
        started = time.perf_counter()
        try:
            response = self.inner.send(request, stream=stream, timeout=timeout, verify=verify,
                                       cert=cert, proxies=proxies)  # fmt: skip
        except Exception as exc:
            self.remote.log_call(method, url, type(exc).__name__, started)
            self.remote.count_call(method, url, _network_kind(exc) or "error", started)
            raise
        self.remote.log_call(method, url, response.status_code, started)
        self.remote.count_call(method, url, response.status_code, started)
        return response

    def close(self) -> None:
        self.inner.close()


def _reason(failure: Failure) -> str:
    """Why a call is retried, in few values (a metric label): 429, 5xx, timeout, connection,
    or the API's own code."""
    if failure.status == 429:
        return "429"
    if failure.code is not None:
        return failure.code
    if failure.status is not None:
        return f"{failure.status // 100}xx"
    return failure.network or "other"


def _network_kind(exc: BaseException) -> str | None:
    if isinstance(exc, requests.Timeout):
        return TIMEOUT
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return CONNECTION
    return None


# ---------------------------------------------------------------------- paging


def offset_pages(
    fetch: Callable[[int, int], Mapping[str, Any]], count: int, key: str
) -> Iterator[list[Any]]:
    """The `key` list of each page `fetch(count, offset)` returns, until `offset` reaches the
    page's `total_items` or a page comes back empty (a total that grew while reading is
    followed; one that lies cannot loop forever)."""
    offset = 0
    while True:
        page = fetch(count, offset)
        items = list(page.get(key) or [])
        yield items
        offset += count
        if not items or offset >= int(page.get("total_items") or 0):
            return


def offset_items(
    fetch: Callable[[int, int], Mapping[str, Any]], count: int, key: str
) -> Iterator[Any]:
    """Every item over all `offset_pages`."""
    for items in offset_pages(fetch, count, key):
        yield from items


def cursor_pages(fetch: Callable[[C | None], tuple[P, C | None]]) -> Iterator[P]:
    """Pages that name the next: `fetch(None)` gives the first page and the next cursor,
    `fetch(cursor)` the following ones, until the cursor is None. Lazy: the next page is
    fetched only when the previous one has been consumed."""
    cursor: C | None = None
    while True:
        page, cursor = fetch(cursor)
        yield page
        if cursor is None:
            return
