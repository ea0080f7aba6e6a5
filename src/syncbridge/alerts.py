"""Failure alerts: a JSON POST to `[daemon] alert_webhook` when a job has failed
`alert_after` times in a row, and one more when it recovers.

`AlertState.record(job, ok, error)` is called after every outcome of every job (the daemon's
jobs, the `run --every` cycle). Per job it keeps a small state machine:

    healthy --fail--> failing (n < N) --fail--> ... --N-th fail--> alerted   POST "failing"
    alerted --fail--> alerted (no repeat)       alerted --ok--> healthy      POST "recovered"
    failing (n < N) --ok--> healthy (nothing was said, nothing to take back)

The body is `{job, status: "failing"|"recovered", failures, last_error, at}`. `record` never
waits for the network: alerts are queued and sent, in order, by one background thread that
retries a failed delivery briefly (tenacity: 3 tries within about 10 s, each with a 5 s
timeout), then gives up with a warning — a down alerting system must never hold back a sync.
The error text is cleaned before it leaves: registered secrets masked (`redaction`), email
addresses replaced, length capped. The webhook URL is itself a secret (a Slack or Teams URL
carries its token) and is never logged.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import requests
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from .redaction import redact

if TYPE_CHECKING:
    from .config.models import DaemonAlertsConfig

log = logging.getLogger(__name__)

FAILING, RECOVERED = "failing", "recovered"
ERROR_LIMIT = 500
"""Characters of the last error an alert carries."""
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(\.[\w-]+)+")
_QUEUE_LIMIT = 100


@dataclass
class _Job:
    failures: int = 0
    alerted: bool = False
    last_error: str | None = None


class DeliveryFailed(Exception):
    """The receiver did not take an alert (an error status, or no answer)."""


def clean_error(error: BaseException | str | None) -> str | None:
    """The error as an alert may carry it: secrets masked, emails replaced, capped."""
    if error is None:
        return None
    text = redact(str(error) or type(error).__name__)
    text = _EMAIL.sub("<email>", text)
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


class AlertState:
    """Consecutive failures per job, and the alerts they call for (see the module docstring).

    Without a webhook it still keeps count (and logs the transitions) but sends nothing."""

    def __init__(
        self,
        webhook: str | None,
        after: int = 3,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        max_delivery_s: float = 10.0,
        backoff_s: float = 0.5,
    ) -> None:
        if after < 1:
            raise ValueError("alert_after must be at least 1")
        self.webhook, self.after = webhook, after
        self.timeout_s, self.attempts = timeout_s, attempts
        self.max_delivery_s, self.backoff_s = max_delivery_s, backoff_s
        self.jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(_QUEUE_LIMIT)
        self._sender: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: DaemonAlertsConfig) -> AlertState:
        hook = config.alert_webhook
        return cls(hook.get_secret_value() if hook is not None else None, config.alert_after)

    def record(
        self, job: str, ok: bool, error: BaseException | str | None = None
    ) -> dict[str, Any] | None:
        """One outcome of `job`. Returns the alert it queued (None: nothing to say)."""
        with self._lock:
            state = self.jobs.setdefault(job, _Job())
            if not ok:
                state.failures += 1
                state.last_error = clean_error(error)
                if state.failures < self.after or state.alerted:
                    return None
                state.alerted = True
                alert = self._alert(job, FAILING, state)
            elif state.alerted:
                alert = self._alert(job, RECOVERED, state)
                self.jobs[job] = _Job()
            else:
                state.failures, state.last_error = 0, None
                return None
        level = logging.ERROR if alert["status"] == FAILING else logging.INFO
        log.log(level, "job %s %s after %d failure(s) in a row", job, alert["status"],
                alert["failures"], extra={"job": job, "alert": alert["status"]})  # fmt: skip
        if self.webhook:
            self._enqueue(alert)
        return alert

    @staticmethod
    def _alert(job: str, status: str, state: _Job) -> dict[str, Any]:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        return {"job": job, "status": status, "failures": state.failures,
                "last_error": state.last_error, "at": at}  # fmt: skip

    # ------------------------------------------------------------------ delivery

    def _enqueue(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.warning("alert for job %s dropped: %d alerts wait for the webhook already",
                        alert["job"], _QUEUE_LIMIT)  # fmt: skip
            return
        if self._sender is None or not self._sender.is_alive():
            self._sender = threading.Thread(target=self._send_all, name="alerts", daemon=True)
            self._sender.start()

    def _send_all(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                self._deliver(alert)
            finally:
                self._queue.task_done()

    def _deliver(self, alert: dict[str, Any]) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type((DeliveryFailed, requests.RequestException)),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.max_delivery_s),
            wait=wait_exponential(multiplier=self.backoff_s, max=4),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._post(alert)
        except Exception as exc:
            log.warning("alert webhook did not take the %s alert of job %s: %s", alert["status"],
                        alert["job"], _why(exc))  # fmt: skip

    def _post(self, alert: dict[str, Any]) -> None:
        assert self.webhook is not None
        response = requests.post(self.webhook, json=alert, timeout=self.timeout_s)
        if response.status_code >= 300:
            raise DeliveryFailed(f"answered {response.status_code}")

    def close(self, timeout: float = 5.0) -> None:
        """Give queued alerts up to `timeout` seconds to go out (a daemon's shutdown, tests)."""
        sender = self._sender
        if sender is None or not sender.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        sender.join(timeout)


def _why(exc: BaseException) -> str:
    """A delivery failure without the URL (requests names it in its messages)."""
    if isinstance(exc, DeliveryFailed):
        return str(exc)
    return type(exc).__name__
