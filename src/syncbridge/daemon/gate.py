"""The daemon's Mailchimp client: no new call once shutdown began, so it ends cleanly.

On SIGTERM the push in flight must not be cut in the middle of a call (Mailchimp would apply
it and nobody would acknowledge it). The gate lets every call already sent finish — its
answer is acknowledged as usual — and refuses to send another: the push then stops with
`ShuttingDown`, leaving the rest of its work queued for the next start. Acknowledged state
therefore stays exactly what Mailchimp confirmed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from ..config.models import MailchimpConfig
from ..errors import SyncbridgeError
from ..push.client import MailchimpClient

T = TypeVar("T")


class ShuttingDown(SyncbridgeError):
    """The daemon is stopping: this call was not sent, and its work stays queued."""


class GatedClient(MailchimpClient):
    """A MailchimpClient whose `call` checks the daemon's stop flag before each call."""

    def __init__(self, config: MailchimpConfig, stopping: threading.Event, agent: str) -> None:
        session = requests.Session()  # pooled as Remote builds its own
        pooled = HTTPAdapter(pool_connections=1, pool_maxsize=config.max_connections)
        session.mount("https://", pooled)
        session.mount("http://", pooled)
        super().__init__(config, session=session)
        # which agent called, for Mailchimp's logs and ours (the SDK sets its own otherwise)
        self.sdk.api_client.default_headers["User-Agent"] = f"syncbridge-daemon ({agent})"
        self.stopping = stopping

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.stopping.is_set():
            raise ShuttingDown("the daemon is stopping: call not sent, its work stays queued")
        return super().call(fn, *args, **kwargs)
