"""The Shopify Admin GraphQL API on syncbridge's remote-API layer, paced by Shopify's bucket.

Every call is a POST of a GraphQL document to ``{origin}/admin/api/{version}/graphql.json``
with the ``X-Shopify-Access-Token`` header, made through `syncbridge.remote`: 5xx answers,
resets and timeouts are retried with backoff; 401 and 403 stop the run with an AuthError that
names the environment variable holding the token (never the token: it is registered for
redaction as soon as it is read).

**Throttling never fails a run.** Shopify limits an app per shop by a leaky bucket of query
cost; every answer carries ``extensions.cost.throttleStatus`` (``maximumAvailable``,
``currentlyAvailable``, ``restoreRate``). The client remembers the latest and, before a
request whose requested cost would not fit, waits until the bucket has refilled enough
(`Bucket.wait_for`). When Shopify throttles anyway (HTTP 200 with an ``errors[]`` entry whose
``extensions.code`` is ``THROTTLED``, or HTTP 429 with ``Retry-After``), it waits as told, or
as long as the bucket needs, and asks again, for up to `throttle_patience_s` of waiting on
one request (then a RetriableError: the next run continues from the saved cursor). Other
GraphQL ``errors`` stop the run with a FatalError naming the stream and Shopify's messages.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import requests

from syncbridge.errors import AuthError, FatalError, RetriableError, SyncbridgeError
from syncbridge.redaction import redact, register_secret
from syncbridge.remote import CONNECTION, TIMEOUT, Action, CallFailed, Failure, Remote, RetryPolicy

log = logging.getLogger("syncbridge_connectors.shopify")
TOKEN_HEADER = "X-Shopify-Access-Token"
POLICY_TABLE: dict[int | str, Action] = {
    "5xx": Action.RETRY, TIMEOUT: Action.RETRY, CONNECTION: Action.RETRY,
    401: Action.AUTH, 403: Action.AUTH,
}  # fmt: skip
"""429 is not here: it is a throttle, waited out by `GraphQL.execute` without using attempts."""


@dataclass
class Bucket:
    """Shopify's leaky bucket as last reported, and when (on the client's clock)."""

    maximum: float = 1000.0
    available: float = 1000.0
    restore_rate: float = 50.0
    seen_at: float | None = None

    def update(self, status: dict[str, Any], now: float) -> None:
        self.maximum = float(status.get("maximumAvailable") or self.maximum)
        self.available = float(status.get("currentlyAvailable") or 0.0)
        self.restore_rate = float(status.get("restoreRate") or self.restore_rate) or 1.0
        self.seen_at = now

    def available_at(self, now: float) -> float:
        if self.seen_at is None:
            return self.maximum
        return min(self.maximum, self.available + (now - self.seen_at) * self.restore_rate)

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until `cost` points are available (0: now)."""
        missing = min(cost, self.maximum) - self.available_at(now)
        if missing <= 0:
            return 0.0
        return missing / self.restore_rate + 0.05  # a little over: the two clocks round apart


@dataclass(frozen=True)
class Throttled:
    """A throttled answer: how long to wait before asking again (None: as the bucket says)."""

    wait_s: float | None


class GraphQL:
    """One shop's GraphQL endpoint: token, remote, bucket. `sleep` and `clock` are the class's
    so tests can stand in for time."""

    sleep: Callable[[float], None] = staticmethod(time.sleep)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, endpoint: str, token_env: str, remote: Remote, patience_s: float) -> None:
        self.endpoint, self.token_env, self.remote = endpoint, token_env, remote
        self.patience_s = patience_s
        self.bucket = Bucket()
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The access token from its environment variable (read once, registered as secret)."""
        if self._token is None:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise FatalError(
                    f"Shopify: the environment variable {self.token_env} is not set; put the "
                    "Admin API access token of the shop's app in it (token_env names another)"
                )
            register_secret(value)
            self._token = value
        return self._token

    def execute(self, query: str, variables: dict[str, Any], what: str, cost: float = 1) -> Any:
        """The `data` of one GraphQL call; waits out throttling, raises on other errors."""
        waited = 0.0
        while True:
            pause = self.bucket.wait_for(cost, type(self).clock())
            if pause > 0:
                waited += self._pause(pause, what, "pacing")
            answer = self.remote.call(lambda: self._post(query, variables), what)
            if isinstance(answer, Throttled):
                if answer.wait_s is not None:
                    pause = answer.wait_s
                else:
                    pause = max(self.bucket.wait_for(cost, type(self).clock()), 1.0)
                if waited + pause > self.patience_s:
                    raise RetriableError(
                        f"Shopify kept throttling {what} for {waited:.0f} s; the next run "
                        "continues from the saved cursor"
                    )
                waited += self._pause(pause, what, "throttled")
                continue
            return answer

    def _pause(self, seconds: float, what: str, why: str) -> float:
        log.info("Shopify %s: %s, waiting %.1f s for the rate limit", what, why, seconds)
        type(self).sleep(seconds)
        return seconds

    def _post(self, query: str, variables: dict[str, Any]) -> Any:
        """One request: the data, or Throttled; a GraphQL error raises FatalError."""
        body = orjson.dumps({"query": query, "variables": variables})
        headers = {TOKEN_HEADER: self.token, "Content-Type": "application/json",
                   "Accept": "application/json"}  # fmt: skip
        try:
            response = self.remote.request("POST", self.endpoint, data=body, headers=headers)
        except CallFailed as exc:
            if exc.failure.status == 429:
                return Throttled(exc.failure.retry_after)
            raise
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise CallFailed(
                Failure(f"Shopify answered {response.status_code} with no JSON", status=502)
            ) from None
        cost = (doc.get("extensions") or {}).get("cost") or {}
        if cost.get("throttleStatus"):
            self.bucket.update(cost["throttleStatus"], type(self).clock())
        errors = doc.get("errors") or []
        if any(_code(e) == "THROTTLED" for e in errors):
            return Throttled(None)
        if errors:
            raise GraphQLErrors(errors)
        return doc.get("data")


class GraphQLErrors(Exception):
    """Shopify answered with `errors` (not throttling): the stream cannot be read."""

    def __init__(self, errors: list[Any]) -> None:
        self.errors = errors
        super().__init__("; ".join(_message(e) for e in errors[:5]))


def classify(exc: BaseException, what: str) -> Failure | None:
    """GraphQL errors in the policy's terms: fatal, with the call named."""
    if isinstance(exc, GraphQLErrors):
        return Failure(f"Shopify rejected {what}: {redact(str(exc))}", status=400)
    return None


def error_for(token_env: str) -> Callable[[Failure, Action], SyncbridgeError | None]:
    """The error a refusal stops the run with: which token, and what to check."""

    def error(failure: Failure, action: Action) -> SyncbridgeError | None:
        if failure.status == 401:
            return AuthError(
                f"Shopify refused the access token (401): check the Admin API access token in "
                f"the environment variable {token_env} (revoked, or for another shop)"
            )
        if failure.status == 403:
            return AuthError(
                "Shopify refused access (403): the app lacks a scope this read needs "
                "(read_customers, read_orders, read_products; abandoned checkouts also need "
                f"manage_abandoned_checkouts); token from {token_env}"
            )
        if failure.status == 404:
            return FatalError(f"Shopify: no Admin API at {failure.url} (check shop, api_version)")
        if action is Action.FATAL and failure.body and failure.status and failure.status < 500:
            return FatalError(f"{failure.message}: {redact(str(failure.body))[:500]}")
        return None

    return error


def make_remote(policy: RetryPolicy, timeout_s: float, token_env: str) -> Remote:
    return Remote(
        "Shopify", policy, log, max_connections=4, timeout_s=timeout_s,
        base_path="/admin/api", classify=classify, error=error_for(token_env),
        always_show_attempt=False,
    )  # fmt: skip


def stream_lines(remote: Remote, url: str, retries: int) -> Any:
    """The lines of a result file (the bulk JSONL), read as they arrive: memory holds one chunk,
    not the file. No Shopify header goes there (the URL is a signed storage link). A download
    cut off midway starts again, skipping the lines already given, up to `retries` times."""
    given, attempt = 0, 0
    while True:
        response = remote.call(lambda: remote.request("GET", url, stream=True), "bulk results")
        try:
            seen = 0
            for line in response.iter_lines():
                if not line:
                    continue
                seen += 1
                if seen > given:
                    given = seen
                    yield line
            return
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            attempt += 1
            if attempt > retries:
                raise RetriableError(
                    f"Shopify bulk results cut off: {type(exc).__name__}"
                ) from None
            log.warning("Shopify bulk results cut off after %d lines; reading again", given)
        finally:
            response.close()


def _code(error: Any) -> str | None:
    extensions = error.get("extensions") if isinstance(error, dict) else None
    return str(extensions.get("code")) if isinstance(extensions, dict) else None


def _message(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    code = _code(error)
    return f"{error.get('message', error)}" + (f" ({code})" if code else "")
