"""The Mailchimp SDK on syncbridge's remote-API layer (`syncbridge.remote`), with clear errors.

The official SDK calls module-level `requests` functions (no pooling, no retries) and turns
every failure into `ApiClientError`; here its transport is a `Remote`'s pooled session, at most
`max_connections` calls are in flight across all threads (Mailchimp allows 10 per key),
429/5xx/timeouts/resets are retried with exponential backoff and jitter (honouring
`Retry-After`), 401/403 stop the run with the key masked, and other API errors surface as
`ApiError` carrying Mailchimp's problem document. Each HTTP call is logged at DEBUG by this
module's logger.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import mailchimp_marketing
import orjson
import requests
from mailchimp_marketing.api_client import ApiClientError

from ..config.models import MailchimpConfig
from ..errors import AuthError, FatalError, SyncbridgeError
from ..redaction import redact, register_secret
from ..references import data_centre
from ..remote import TRANSIENT, Action, CallFailed, Failure, Remote, RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")
POLICY_TABLE = {**TRANSIENT, 401: Action.AUTH, 403: Action.AUTH}
"""429, 5xx, timeouts and resets are retried; a refused key stops; anything else is an ApiError."""


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
        policy = RetryPolicy(POLICY_TABLE, attempts=config.retries + 1, backoff_s=backoff_s,
                             backoff_max_s=30, retry_after_max_s=120)  # fmt: skip
        self.remote = Remote(
            "Mailchimp", policy, log, max_connections=config.max_connections,
            timeout_s=config.timeout_s, session=session, base_path="/3.0",
            classify=self._classify, error=self._error,
        )  # fmt: skip
        self.auth = ("syncbridge", key)
        self.sdk.api_client.request = self._transport

    @property
    def session(self) -> requests.Session:
        return self.remote.session

    @property
    def max_connections(self) -> int:
        return self.remote.max_connections

    @property
    def slots(self) -> threading.BoundedSemaphore:
        """The connection limit shared by every thread using this client."""
        return self.remote.slots

    @slots.setter
    def slots(self, value: threading.BoundedSemaphore) -> None:
        self.remote.slots = value

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call within the connection limit, retrying transient failures."""
        return self.remote.call(lambda: _checked(fn(*args, **kwargs)))

    def _transport(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> requests.Response:
        """Replaces the SDK's transport; an error status raises before the SDK's own check."""
        data = None if method in ("GET", "HEAD", "DELETE", "OPTIONS") else _dumps(body)
        response = self.remote.request(
            method, url, params=query_params, headers=headers, data=data, auth=self.auth
        )
        # the SDK decodes with response.json(): orjson reads a 500-member answer 3-4x faster
        response.json = partial(_loads, response)  # type: ignore[method-assign]
        return response

    @staticmethod
    def _classify(exc: BaseException, _what: str) -> Failure | None:
        """The SDK wraps whatever its transport raised, and any error answer, in ApiClientError."""
        if not isinstance(exc, ApiClientError):
            return None
        if isinstance(exc.text, CallFailed):
            return exc.text.failure
        return Failure(f"Mailchimp {exc.status_code}", status=exc.status_code, body=exc.text)

    def _error(self, failure: Failure, action: Action) -> SyncbridgeError | None:
        api = failure.url is None or failure.url.startswith(self.sdk.api_client.host)
        if not api:  # a pre-signed download (batch results): no key involved
            return None
        problem = _problem(failure.body)
        if action is Action.AUTH:
            return AuthError(
                redact(
                    f"Mailchimp refused the API key ({failure.status} {problem.get('title', '')}: "
                    f"{problem.get('detail', '')}); check mailchimp.api_key"
                )
            )
        return ApiError(failure.status, problem)


def _dumps(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson refuses (integers beyond 64 bits) the standard library takes
        return json.dumps(body).encode()


def _loads(response: requests.Response, **_: Any) -> Any:
    return orjson.loads(response.content)


def _checked(result: T) -> T:
    """An answer the SDK hands back as a bare response (no JSON body) may still be an error."""
    if isinstance(result, requests.Response) and not result.ok:
        raise CallFailed(
            Failure(f"Mailchimp {result.status_code}", status=result.status_code, body=result.text)
        )
    return result
