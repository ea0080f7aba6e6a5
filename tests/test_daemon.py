"""The daemon's cycle: the first one alone reads the named streams from scratch, and a failed
cycle is logged, not fatal. (The lock and SIGTERM, through a real process, are in
test_writer_lock.py.)"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from syncbridge.config.loader import StreamKey
from syncbridge.daemon import DaemonOptions, loop
from syncbridge.errors import FatalError
from syncbridge.pipeline import CycleReport

from .builders import settings_from


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def run_cycle(settings: Any, engine: Any, hook: Any, **kwargs: Any) -> CycleReport:
        seen.append({**kwargs, "full_refresh": list(kwargs["full_refresh"])})
        if len(seen) == 2:
            raise FatalError("crm/contacts: the export went missing")
        return CycleReport(run_id=len(seen))

    monkeypatch.setattr(loop, "run_cycle", run_cycle)
    return seen


def test_only_the_first_cycle_refreshes_and_a_failed_one_does_not_stop_the_next(
    tmp_path: Path, calls: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_from({"store": {"url": f"sqlite:///{tmp_path / 'c.db'}"}}, tmp_path)
    key = StreamKey("crm", "contacts")
    cycle = loop._Cycle(settings, DaemonOptions(60, 0.0, [key], True), nullcontext)
    with caplog.at_level(logging.INFO, logger="syncbridge.daemon"):
        for _ in range(3):
            cycle()
    assert [c["full_refresh"] for c in calls] == [[key], [], []]
    assert all(c["allow_mass_removal"] for c in calls)
    assert "cycle failed: crm/contacts: the export went missing" in caplog.text
    assert "run 3 ok" in caplog.text
