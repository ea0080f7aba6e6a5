"""Group commit: requests that arrive while a write is under way are stored together.

Each accepted request waits for the transaction that holds it (it is answered only once it is
durably in the cache). One thread writes: it takes the first request waiting, then every other
one already waiting (up to a size), and hands them to `write` as one group. Under light load a
request is written at once, alone; under heavy load the queue fills while a transaction
commits and the next one takes it all, so the commits per second stay few while the requests
per second grow. The event intake and the Shopify webhooks both write through one.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

Item = TypeVar("Item")


class GroupWriter(ABC, Generic[Item]):
    def __init__(self, max_size: int, name: str) -> None:
        self.max_size = max_size
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @abstractmethod
    def size(self, item: Item) -> int:
        """How much of a group's `max_size` this item takes."""

    @abstractmethod
    def write(self, group: list[Item]) -> None:
        """Store a group and tell each of its items the outcome (never raise)."""

    @abstractmethod
    def refuse(self, item: Item, error: Exception) -> None:
        """Tell an item that arrived after `close` that it will not be stored."""

    def put(self, item: Item) -> None:
        if self._closed:
            self.refuse(item, RuntimeError("shutting down: nothing more is stored"))
        else:
            self._queue.put(item)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is waiting, then stop."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            group, taken = [item], self.size(item)
            while taken < self.max_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
                taken += self.size(more)
            self.write(group)
