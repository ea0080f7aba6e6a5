"""Broken surroundings get one line saying what is wrong and what to do, never a traceback."""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from syncbridge.cli import app
from syncbridge.store import engine as engine_module
from syncbridge.store.failures import store_failure

from .conftest import POSTGRES_URL

runner = CliRunner()


def _use_store(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SYNCBRIDGE_STORE__URL", url)


def _one_error_line(output: str) -> str:
    """The output's single error line (log lines of a run that got going may precede it)."""
    assert "Traceback" not in output and "unexpectedly" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _only_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return _one_error_line(output)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [["run", "--once"], ["status"], ["plan"], ["db", "upgrade"]])
def test_a_cache_file_that_is_not_sqlite_is_named_in_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    cache = workdir / "cache.db"
    cache.write_text("name,email\nann,ann@example.com\n" * 200, encoding="utf-8")
    _use_store(monkeypatch, f"sqlite:///{cache}")
    result = runner.invoke(app, [*command, "-c", "config.toml"])
    assert result.exit_code == 1
    line = _only_line(result.output)
    assert f"{cache} is not a SQLite database" in line
    assert "point store.url at a syncbridge cache or remove the file" in line


@pytest.fixture
def readonly_folder(workdir: Path) -> Iterator[Path]:
    """A folder holding a cache from one good run, then made read-only (for root too: a
    read-only bind mount; others: no write permission)."""
    folder = workdir / "ro"
    folder.mkdir()
    done = _syncbridge(workdir, f"sqlite:///{folder / 'cache.db'}", "run", "--once")
    assert done.returncode == 0, done.stdout
    if _is_root():
        if not _mount("--bind", folder, folder):
            pytest.skip("cannot bind-mount here")
        if not _mount("-o", "remount,bind,ro", folder):
            subprocess.run(["umount", str(folder)], check=False)
            pytest.skip("cannot remount read-only here")
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def _syncbridge(workdir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own (nothing stays open here after it ends)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    env |= {"SYNCBRIDGE_STORE__URL": url, "COLUMNS": "300"}
    return subprocess.run(
        [str(Path(sys.executable).with_name("syncbridge")), *args, "-c", "config.toml"],
        cwd=workdir, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _mount(*args: object) -> bool:
    done = subprocess.run(["mount", *map(str, args)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("command", [["run", "--once"], ["status"]])
def test_a_read_only_folder_is_named_in_one_line(
    readonly_folder: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    _use_store(monkeypatch, f"sqlite:///{readonly_folder / 'cache.db'}")
    result = runner.invoke(app, [*command, "-c", "config.toml"])
    assert result.exit_code == 1
    line = _only_line(result.output)
    assert f"the folder {readonly_folder} is read-only" in line
    assert "make it writable or point store.url elsewhere" in line


def test_a_read_only_cache_file_is_named() -> None:
    with pytest.raises(sqlite3.OperationalError) as caught:  # the real error SQLite gives
        conn = sqlite3.connect("file::memory:?mode=ro", uri=True)
        conn.execute("CREATE TABLE t (x)")
    failure = store_failure(caught.value, "sqlite:////srv/sync/cache.db")
    assert failure is not None
    assert "/srv/sync" in str(failure) and "read-only" in str(failure)


def test_a_full_disk_is_said_in_one_line(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = engine_module._sqlite_pragmas

    def tiny_disk(dbapi_connection: Any, record: Any) -> None:
        original(dbapi_connection, record)
        dbapi_connection.execute("PRAGMA max_page_count = 150")  # room for the schema only

    monkeypatch.setattr(engine_module, "_sqlite_pragmas", tiny_disk)
    cache = workdir / "cache.db"
    _use_store(monkeypatch, f"sqlite:///{cache}")
    result = runner.invoke(app, ["run", "--once", "-c", "config.toml"])
    assert result.exit_code == 1
    line = _one_error_line(result.output)
    assert f"the disk holding {cache} is full" in line and "free some space" in line


def test_a_full_tmpfs_is_said_in_one_line(workdir: Path) -> None:
    disk = workdir / "small"
    disk.mkdir()
    if not _is_root() or not _mount("-t", "tmpfs", "-o", "size=200k", "tmpfs", disk):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        result = _syncbridge(workdir, f"sqlite:///{disk / 'cache.db'}", "run", "--once")
        assert result.returncode == 1
        line = _one_error_line(result.stderr)
        assert "is full: free some space" in line and str(disk) in line
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_locked_source_file_is_not_mistaken_for_the_cache() -> None:
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/exports/contacts.csv")
    assert store_failure(denied, "sqlite:////srv/sync/cache.db") is None


@pytest.mark.parametrize("command", [["run", "--once"], ["status"]])
def test_a_refused_connection_names_host_and_port_but_not_the_password(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    port = _closed_port()
    _use_store(monkeypatch, f"postgresql+psycopg://sync:Pw-Secret-123@127.0.0.1:{port}/cache")
    result = runner.invoke(app, [*command, "-c", "config.toml"])
    assert result.exit_code == 1
    line = _only_line(result.output)
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}" in line
    assert "is the server running" in line
    assert "Pw-Secret-123" not in result.output


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["run", "--once"], ["status"]])
def test_a_missing_postgres_database_says_createdb(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    if not POSTGRES_URL:
        pytest.skip("SYNCBRIDGE_TEST_POSTGRES_URL is not set")
    url = make_url(POSTGRES_URL)
    missing = f"{url.database}_does_not_exist"
    _use_store(monkeypatch, url.set(database=missing).render_as_string(hide_password=False))
    result = runner.invoke(app, [*command, "-c", "config.toml"])
    assert result.exit_code == 1
    line = _only_line(result.output)
    assert f'PostgreSQL database "{missing}" does not exist' in line
    assert f"createdb -h {url.host}" in line and missing in line


class _SlammingServer:
    """Accepts TCP connections and closes them at once, counting them: a network that fails."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def _plan_offline(workdir: Path, monkeypatch: pytest.MonkeyPatch, base_url: str) -> Any:
    assert runner.invoke(app, ["run", "--once", "-c", "config.toml"]).exit_code == 0
    monkeypatch.setenv("MAILCHIMP_API_KEY", "0123456789abcdef0123456789abcdef-us21")
    monkeypatch.setenv("SYNCBRIDGE_MAILCHIMP__API_BASE_URL", base_url)
    return runner.invoke(app, ["plan", "-c", "config.toml"])


def test_plan_without_network_prints_the_local_plan_and_what_it_could_not_check(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _plan_offline(workdir, monkeypatch, f"http://127.0.0.1:{_closed_port()}/3.0")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "Plan for audience customers" in result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    checks = [n for n in notes if "could not check" in n]
    assert len(checks) == 1, result.output
    assert "could not check with Mailchimp which merge fields and tags" in checks[0]
    # the sample data's shop tag `vip` beside the rules' `VIP` segment: one tag in Mailchimp
    assert any("tag 'vip'" in n and "ignores case" in n for n in notes), result.output
    notes = checks
    assert "ConnectionError" in notes[0] and "from the cache alone" in notes[0]


def test_plan_asks_mailchimp_once_without_the_push_retries(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _SlammingServer()
    try:
        result = _plan_offline(workdir, monkeypatch, f"http://127.0.0.1:{server.port}/3.0")
    finally:
        server.sock.close()
    assert result.exit_code == 0, result.output
    assert "Plan for audience customers" in result.output
    assert server.connections == 1  # the push would have tried mailchimp.retries + 1 = 6 times
