"""Garbage-collector settings for bulk work (ingestion, resolution).

CPython's cyclic collector runs after every few hundred container allocations and, from time to
time, walks every live object: the loaded libraries (pydantic models, SQLAlchemy, pycountry and
phonenumbers metadata) as well as the page being processed. Bulk work allocates millions of
short-lived dicts, tuples and lists, none of them in cycles, so those walks were a fifth of
ingestion time. Inside `bulk_gc()` what is alive on entry is frozen out of the collector's walks
(`gc.freeze`, as the documentation recommends before forking workers, which the producer
process is) and collections run a hundred times less often; memory stays bounded because
collections still run. Both settings are restored on exit.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLDS = (50_000, 20, 20)
"""(young generation allocations, young collections per middle one, middle per old one)"""


@contextmanager
def bulk_gc() -> Iterator[None]:
    """Run the body with the collector tuned for many short-lived objects (reentrant)."""
    before = gc.get_threshold()
    if before[0] >= BULK_THRESHOLDS[0]:  # already inside: nothing to do
        yield
        return
    gc.freeze()
    gc.set_threshold(*BULK_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


__all__ = ["BULK_THRESHOLDS", "bulk_gc"]
