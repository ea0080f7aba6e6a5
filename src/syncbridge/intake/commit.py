"""Group commit: requests that arrive while a write is under way are stored together.

Each accepted request waits for the transaction that holds its events (an event is answered
only once it is durably in the cache). One thread writes: it takes the first request waiting,
then every other one already waiting (up to `max_records` events), and stores them in one
transaction. Under light load a request is written at once, alone; under heavy load the
queue fills while a transaction commits and the next one takes it all, so the commits per
second stay few while the events per second grow.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Engine

from ..ingest import StreamIngest, append_records

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(
        self, engine: Engine, job: Callable[[], StreamIngest], max_records: int = 5000
    ) -> None:
        """`job` gives the stream to store into as the setup is now (a reload may change its
        mapping), asked once per transaction."""
        self.engine, self.job, self.max_records = engine, job, max_records
        self._queue: queue.Queue[tuple[list[dict[str, Any]], Future[int]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="intake-commit", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, records: list[dict[str, Any]]) -> Future[int]:
        """The future is done once `records` are committed (its result: how many were new)."""
        done: Future[int] = Future()
        if self._closed:
            done.set_exception(RuntimeError("the intake is shutting down"))
            return done
        self._queue.put((records, done))
        return done

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
            group = [item]
            count = len(item[0])
            while count < self.max_records:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
                count += len(more[0])
            self._write(group)

    def _write(self, group: list[tuple[list[dict[str, Any]], Future[int]]]) -> None:
        records = [r for rs, _ in group for r in rs]
        try:
            new = append_records(self.engine, self.job(), records)
        except BaseException as exc:  # every request of the group is told; none is lost silently
            log.error("storing %d intake event(s) failed: %s", len(records), exc)
            for _, done in group:
                done.set_exception(exc)
            return
        log.debug("stored %d intake event(s) of %d request(s), %d new", len(records),
                  len(group), new)  # fmt: skip
        for rs, done in group:
            done.set_result(len(rs))
