"""A killed run leaves nothing behind: its reader processes end with it, and the next run marks
it interrupted (issue 11, point 13). Both tests failed before the fix: the producer lived on, and
the run stayed `running` for ever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import select

from syncbridge.pipeline import start_run
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Run

PARENT = textwrap.dedent("""
    import sys, time
    from syncbridge.connectors import Page, Stream
    from syncbridge.ingest import StreamIngest, ingest_streams
    from syncbridge.store.engine import open_engine
    from syncbridge.transform import RecordTransformer
    sys.path.insert(0, sys.argv[2])
    from tests.streams import PERSON_MAPPING

    class Slow(Stream):
        name, primary_key = "slow", ("id",)

        def read(self, cursor):
            for i in range(600):  # a page a second: far longer than the test waits
                yield Page([{"id": str(i), "email": f"p{i}@gmail.com"}], None)
                time.sleep(1)

    engine = open_engine(sys.argv[1])
    job = StreamIngest("crm", Slow(), RecordTransformer(PERSON_MAPPING, "US"), parallel=True)
    ingest_streams(engine, [job], workers=1)
""")


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits for a reaper


def test_producers_end_when_their_run_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    repo = str(Path(__file__).resolve().parent.parent)
    parent = subprocess.Popen([sys.executable, str(script), url, repo])
    producers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not (producers := children_of(parent.pid)) and time.monotonic() < deadline:
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.1)
        assert producers, "no producer process was started"
        time.sleep(0.5)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in producers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in producers), "a producer outlived its killed parent"
    finally:  # never leave a process behind, whatever failed
        if parent.poll() is None:
            parent.kill()
        for pid in producers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_run_left_running_by_a_dead_process_becomes_interrupted(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    dead = start_run(engine)  # its process "dies" here: nothing finishes it
    current = start_run(engine)
    with engine.connect() as conn:
        rows = dict(conn.execute(select(Run.__table__.c.id, Run.__table__.c.status)).all())
    assert rows == {dead: "interrupted", current: "running"}
    engine.dispose()
