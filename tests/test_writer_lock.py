"""One writer at a time: real `syncbridge` processes on one cache, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from syncbridge.cli import app
from syncbridge.errors import CacheBusyError
from syncbridge.store import engine as engine_module
from syncbridge.store.engine import open_engine

runner = CliRunner()
SYNCBRIDGE = str(Path(sys.executable).with_name("syncbridge"))
HOLD = """
import sys
from syncbridge.store.writer_lock import writer_lock
with writer_lock(sys.argv[1], "run --once"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Path:
    """`syncbridge init` output, with store.url pointed at the backend under test."""
    monkeypatch.chdir(tmp_path)
    for var in ("SYNCBRIDGE_CONFIG", "MAILCHIMP_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SYNCBRIDGE_STORE__URL", store_url)
    assert runner.invoke(app, ["init"]).exit_code == 0
    return tmp_path


def _env(store_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCBRIDGE_", "MAILCHIMP"))}
    return env | {"SYNCBRIDGE_STORE__URL": store_url, "COLUMNS": "300"}


def _start_run(workdir: Path, store_url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SYNCBRIDGE, "run", "--once", "-c", "config.toml", *extra],
        cwd=workdir,
        env=_env(store_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def holder(store_url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the writer lock of the (migrated) cache until its stdin closes."""
    open_engine(store_url).dispose()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, store_url],
        env=_env(store_url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _run_statuses(store_url: str) -> list[str]:
    engine = open_engine(store_url, migrate=False)
    with engine.connect() as conn:
        statuses = [row[0] for row in conn.execute(text("SELECT status FROM run ORDER BY id"))]
    engine.dispose()
    return statuses


def _flat(output: str) -> str:
    return " ".join(output.split())


def test_runs_started_together_one_writes_the_others_exit_75(workdir: Path, store_url: str) -> None:
    procs = [_start_run(workdir, store_url) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    codes = [p.returncode for p in procs]
    for output in outputs:
        assert "Traceback" not in output and "unexpectedly" not in output, output
    assert set(codes) <= {0, 75} and 0 in codes, outputs
    for code, output in zip(codes, outputs, strict=True):
        if code == 75:
            lines = [line for line in output.splitlines() if line.strip()]
            assert len(lines) == 1, output
            assert "another syncbridge process (pid" in output and "`run --once`" in output
            assert "--wait" in output
    assert _run_statuses(store_url) == ["ok"] * codes.count(0)


def test_with_wait_the_second_run_waits_and_both_complete(workdir: Path, store_url: str) -> None:
    procs = [_start_run(workdir, store_url, "--wait", "120") for _ in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not any("Traceback" in output for output in outputs)
    assert _run_statuses(store_url) == ["ok", "ok"]


def test_status_shows_the_holder_and_a_run_exits_75_naming_it(
    workdir: Path, holder: subprocess.Popen[str]
) -> None:
    held = runner.invoke(app, ["status", "-c", "config.toml"])
    assert held.exit_code == 0, held.output
    who = f"writer: pid {holder.pid} on {socket.gethostname()}, `run --once`, since"
    assert who in _flat(held.output)
    busy = runner.invoke(app, ["run", "--once", "-c", "config.toml"])
    assert busy.exit_code == CacheBusyError.EXIT_BUSY == 75
    assert f"(pid {holder.pid} on" in _flat(busy.output)
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=30)
    free = runner.invoke(app, ["status", "-c", "config.toml"])
    assert "writer: none" in free.output


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(
    workdir: Path, store_url: str, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    # PostgreSQL ends the killed client's session (and its lock) when it sees the socket close
    wait = "0" if store_url.startswith("sqlite") else "10"
    result = runner.invoke(app, ["run", "--once", "-c", "config.toml", "--wait", wait])
    assert result.exit_code == 0, result.output
    status = runner.invoke(app, ["status", "-c", "config.toml"])
    assert "writer: none" in status.output


def test_migrations_on_open_wait_for_the_writer_lock(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = subprocess.Popen(  # holds the lock on a cache with no schema yet
        [sys.executable, "-c", HOLD, store_url],
        env=_env(store_url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        monkeypatch.setattr(engine_module, "MIGRATION_WAIT_S", 0.2)
        with pytest.raises(CacheBusyError, match=f"pid {proc.pid}"):
            open_engine(store_url)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    open_engine(store_url).dispose()
    assert _run_statuses(store_url) == []


def test_a_daemon_waits_for_a_one_off_writer_then_exits_75_naming_it(
    workdir: Path, store_url: str, holder: subprocess.Popen[str]
) -> None:
    daemon = subprocess.run(
        [SYNCBRIDGE, "daemon", "--wait", "0.5", "-c", "config.toml"],
        cwd=workdir,
        env=_env(store_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = daemon.stdout + daemon.stderr
    assert daemon.returncode == CacheBusyError.EXIT_BUSY, output
    assert "waiting up to 0.5s for the writer lock" in output
    assert f"(pid {holder.pid} on" in _flat(output), output
    assert "Traceback" not in output
    assert _run_statuses(store_url) == []
