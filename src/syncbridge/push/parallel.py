"""Independent Mailchimp calls side by side, within the client's connection limit."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from .client import MailchimpClient

T = TypeVar("T")


def in_parallel(client: MailchimpClient, work: Callable[[Any], T], items: list[Any]) -> list[T]:
    """Run independent calls side by side, at most `max_connections` at a time (the client's
    shared limit still applies). Every item finishes before the first failure is raised."""
    if len(items) <= 1:
        return [work(item) for item in items]
    workers = min(len(items), client.max_connections)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push") as pool:
        futures = [pool.submit(work, item) for item in items]
        wait(futures)
    for future in futures:
        exc = future.exception()
        if exc is not None:
            raise exc
    return [f.result() for f in futures]
