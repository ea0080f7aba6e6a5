"""The intake's writer: events of requests waiting together are stored in one transaction
(`grouping.GroupWriter`, up to `max_records` events), each request answered once its events
are committed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Engine

from ..ingest import StreamIngest, append_records
from .grouping import GroupWriter

log = logging.getLogger(__name__)


Request = tuple[list[dict[str, Any]], Future[int]]


class GroupCommit(GroupWriter[Request]):
    def __init__(
        self, engine: Engine, job: Callable[[], StreamIngest], max_records: int = 5000
    ) -> None:
        """`job` gives the stream to store into as the setup is now (a reload may change its
        mapping), asked once per transaction."""
        self.engine, self.job = engine, job
        super().__init__(max_records, "intake-commit")

    def submit(self, records: list[dict[str, Any]]) -> Future[int]:
        """The future is done once `records` are committed (its result: how many were new)."""
        done: Future[int] = Future()
        self.put((records, done))
        return done

    def size(self, item: Request) -> int:
        return len(item[0])

    def refuse(self, item: Request, error: Exception) -> None:
        item[1].set_exception(error)

    def write(self, group: list[Request]) -> None:
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
