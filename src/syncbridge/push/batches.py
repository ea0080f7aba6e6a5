"""Mailchimp's `/batches`: many operations in one request, run by Mailchimp in the background.

Used for very large pushes (an initial load), where even ten parallel connections would take
hours. A batch is polled until it finishes; its results come as a gzipped tar of JSON files,
each an array of `{operation_id, status_code, response}` with `response` a JSON string.
Operations fail one by one; the caller handles each result like the direct call's.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from typing import Any

from ..errors import FatalError
from .client import MailchimpClient

log = logging.getLogger(__name__)
MAX_OPERATIONS = 1000


def run_batch(
    client: MailchimpClient,
    operations: list[dict[str, Any]],
    poll_s: float = 5.0,
    timeout_s: float = 6 * 3600,
) -> dict[str, tuple[int, Any]]:
    """Submit operations (at most 1,000), wait for them, return operation_id → (status, body)."""
    if len(operations) > MAX_OPERATIONS:
        raise ValueError(f"at most {MAX_OPERATIONS} operations per batch")
    batch = client.call(client.sdk.batches.start, {"operations": operations})
    deadline = time.monotonic() + timeout_s
    log.info("submitted Mailchimp batch %s with %d operations", batch["id"], len(operations))
    while batch.get("status") != "finished":
        if time.monotonic() > deadline:
            raise FatalError(f"Mailchimp batch {batch['id']} did not finish in {timeout_s:.0f}s")
        time.sleep(poll_s)
        batch = client.call(client.sdk.batches.status, batch["id"])
    return _results(client, batch["response_body_url"])


def _results(client: MailchimpClient, url: str) -> dict[str, tuple[int, Any]]:
    # a pre-signed URL: no API key; its signature (the query string) is left out of the log
    try:
        archive = client.remote.call(lambda: client.remote.request("GET", url, timeout=120).content)
    except FatalError as exc:
        raise FatalError(f"batch results could not be downloaded: {exc}") from None
    results: dict[str, tuple[int, Any]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            for item in json.load(handle):
                text = item.get("response") or ""
                try:
                    body = json.loads(text) if text else None
                except ValueError:
                    body = {"detail": text[:500]}
                results[str(item.get("operation_id"))] = (int(item.get("status_code", 0)), body)
    return results
