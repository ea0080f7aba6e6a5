"""The Mailchimp SDK with a pooled session, a shared connection limit, retries and clear errors.

The official SDK calls module-level `requests` functions (no pooling, no retries) and turns
every failure into `ApiClientError`; here its transport goes through one `requests.Session`,
at most `max_connections` calls are in flight across all threads (Mailchimp allows 10 per key),
429/5xx/timeouts/resets are retried with exponential backoff and jitter (honouring
`Retry-After`), 401/403 stop the run with the key masked, and other API errors surface as
`ApiError` carrying Mailchimp's problem document.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import mailchimp_marketing
import requests
from mailchimp_marketing.api_client import ApiClientError
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ..config.models import MailchimpConfig
from ..errors import AuthError, FatalError, RetriableError, SyncbridgeError
from ..redaction import redact, register_secret
from ..references import data_centre

log = logging.getLogger(__name__)
T = TypeVar("T")
_attempt = threading.local()
"""The retry attempt of the call this thread is making (`MailchimpClient.retrying` sets it),
for the transport's debug line."""


class ApiError(FatalError):
    """Mailchimp refused a call; `title`, `detail` and `errors` come from its problem document."""

    def __init__(self, status: int | None, problem: dict[str, Any]) -> None:
        self.status = status
        self.title = str(problem.get("title", "error"))
        self.detail = str(problem.get("detail", ""))
        self.errors = list(problem.get("errors") or [])
        fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in self.errors)
        super().__init__(
            redact(
                f"Mailchimp {status} {self.title}: {self.detail}"
                + (f" ({fields})" if fields else "")
            )
        )


def server_of(api_key: str) -> str:
    """The data centre from a key's `-us21` suffix."""
    server = data_centre(api_key)
    if server is None:
        raise FatalError("mailchimp.api_key has no data-centre suffix (like '-us21')")
    return server


class _SessionTransport:
    """Replaces the SDK's transport: one pooled session, status checks before the SDK's own."""

    def __init__(self, session: requests.Session, api_key: str, timeout: float) -> None:
        self.session = session
        self.auth = ("syncbridge", api_key)
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> requests.Response:
        data = None if method in ("GET", "HEAD", "DELETE", "OPTIONS") else json.dumps(body)
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, url, params=query_params, headers=headers, data=data, auth=self.auth,
                timeout=self.timeout,
            )  # fmt: skip
        except (requests.ConnectionError, requests.Timeout) as exc:
            log_call(method, url, type(exc).__name__, started)
            raise RetriableError(f"Mailchimp {method} {_path(url)}: {type(exc).__name__}") from None
        status = response.status_code
        log_call(method, url, status, started)
        if status == 429 or status >= 500:
            retry_after = _seconds(response.headers.get("Retry-After"))
            raise RetriableError(f"Mailchimp {method} {_path(url)}: {status}", retry_after)
        if status in (401, 403):
            problem = _problem(response.text)
            raise AuthError(
                redact(
                    f"Mailchimp refused the API key ({status} {problem.get('title', '')}: "
                    f"{problem.get('detail', '')}); check mailchimp.api_key"
                )
            )
        return response


def log_call(method: str, url: str, outcome: int | str, started: float) -> None:
    """One debug line per HTTP call: method, path, status (or the network error), time and
    retry attempt. The path only: query values (a members search, a pre-signed URL's signature)
    could hold an email or a credential; member paths carry the address's MD5 hash, and a
    segment that is an address anyway is masked."""
    if log.isEnabledFor(logging.DEBUG):
        ms = (time.perf_counter() - started) * 1000
        attempt = getattr(_attempt, "number", 1)
        path = "/".join(
            "<email>" if "@" in part or "%40" in part.lower() else part
            for part in _path(url).split("?", 1)[0].split("/")
        )
        log.debug(
            "Mailchimp %s %s -> %s in %.0f ms (attempt %d)", method, path, outcome, ms, attempt
        )


def _path(url: str) -> str:
    return "/" + url.split("/3.0/", 1)[-1] if "/3.0/" in url else url


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _problem(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        parsed = json.loads(text) if isinstance(text, str | bytes) else {}
    except ValueError:
        return {"detail": str(text)[:500]}
    return parsed if isinstance(parsed, dict) else {"detail": str(parsed)[:500]}


class MailchimpClient:
    """The SDK (`.sdk`) wrapped: call its methods through `call` to get limits and retries."""

    def __init__(
        self,
        config: MailchimpConfig,
        session: requests.Session | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        if config.api_key is None:
            raise FatalError("mailchimp.api_key is not set (e.g. api_key = '${MAILCHIMP_API_KEY}')")
        key = config.api_key.get_secret_value()
        register_secret(key)
        self.sdk = mailchimp_marketing.Client()
        self.sdk.set_config({"api_key": key, "server": server_of(key), "timeout": config.timeout_s})
        if config.api_base_url:
            self.sdk.api_client.host = config.api_base_url.rstrip("/")
            self.sdk.api_client.server = ""  # the SDK would rewrite "server" inside the host
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=config.max_connections)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        transport = _SessionTransport(self.session, key, config.timeout_s)
        self.sdk.api_client.request = transport.request
        self.max_connections = config.max_connections
        self.slots = threading.BoundedSemaphore(config.max_connections)
        self.retries = config.retries
        self.backoff_s = backoff_s

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call within the connection limit, retrying transient failures."""
        return self.retrying(lambda: self._once(fn, *args, **kwargs))

    def retrying(self, work: Callable[[], T]) -> T:
        """Run `work` within the connection limit, retrying RetriableError with backoff."""
        retrying = Retrying(
            retry=retry_if_exception_type(RetriableError),
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait,
            reraise=True,
            before_sleep=lambda state: log.warning(
                "retrying after %s", state.outcome.exception() if state.outcome else "?"
            ),
        )
        for attempt in retrying:
            with attempt, self.slots:
                _attempt.number = attempt.retry_state.attempt_number
                return work()
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetriableError) and exc.retry_after is not None:
            return min(exc.retry_after, 120.0)
        return wait_random_exponential(multiplier=self.backoff_s, max=30)(state)

    @staticmethod
    def _once(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            result = fn(*args, **kwargs)
        except ApiClientError as exc:
            if isinstance(exc.text, SyncbridgeError):  # raised by our transport, wrapped by the SDK
                raise exc.text from None
            raise ApiError(exc.status_code, _problem(exc.text)) from None
        if isinstance(result, requests.Response) and not result.ok:
            raise ApiError(result.status_code, _problem(result.text))
        return result
