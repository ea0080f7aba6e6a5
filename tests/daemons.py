"""Helpers for tests that run `syncbridge daemon` as a real process against the Mailchimp fake
and a file source: a setup on disk, a daemon whose output is read line by line, waits."""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .fakes.mailchimp import FakeMailchimp

FIELDS = ["id", "email", "first_name", "optin"]
MAPPING = """
[identifiers]
email = "email"
external = { "crm" = "id" }
[attributes]
first_name = "first_name"
accepts_email_marketing = { field = "optin", type = "boolean" }
"""
TOKEN = "admin-token-for-tests"
START_S = 300.0
"""How long a daemon may take to start on a busy CI machine (imports, migrations)."""


def person(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"c{i}", "email": f"person{i}@gmail.com", "first_name": f"P{i}",
            "optin": "yes"} | kw  # fmt: skip


def export(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Write the export anew, with a later mtime whatever the clock says (a new file)."""
    path = folder / "contacts.csv"
    temporary = folder / "contacts.csv.tmp"
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    old = path.stat().st_mtime_ns if path.exists() else time.time_ns()
    stamp = max(old + 1_000_000_000, time.time_ns())
    os.utime(temporary, ns=(stamp, stamp))
    os.replace(temporary, path)


def write_setup(
    folder: Path, fake: FakeMailchimp, store_url: str, extra: str = "", schedule: str = "1s"
) -> Path:
    (folder / "mapping.toml").write_text(MAPPING)
    config = folder / "config.toml"
    config.write_text(f"""
[store]
url = "{store_url}"
[ingest]
parallel = false
[daemon]
http = "127.0.0.1:0"
admin_token = "{TOKEN}"
flush_s = 0.5
lease_s = 4
shutdown_timeout_s = 20
reload_poll_s = 0.5
{extra}
[mailchimp]
api_key = "{fake.api_key}"
api_base_url = "{fake.base_url}"
[[mailchimp.audiences]]
name = "customers"
list_id = "L1"
[[mailchimp.audiences.merge_fields]]
tag = "FNAME"
name = "First Name"
source = "first_name"
[[sources]]
name = "crm"
connector = "files"
schedule = "{schedule}"
[[sources.streams]]
name = "contacts"
mapping = "mapping.toml"
path = "contacts.csv"
primary_key = "id"
snapshot = true
""")
    return config


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCBRIDGE_", "MAILCHIMP"))}
    return base | {"COLUMNS": "300"}


class Daemon:
    """A `syncbridge daemon` child; its output is collected by a thread, line by line."""

    def __init__(self, config: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from syncbridge.cli import main; main()",
             "daemon", "-c", str(config), *args],
            cwd=config.parent, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port: int | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._new.put(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        for line in list(self.lines):
            if match := regex.search(line):
                return match
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self._new.empty():
                    break
                continue
            if match := regex.search(line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.output}")

    def started(self) -> Daemon:
        """Waits for the HTTP server and the jobs; a daemon that does not start is killed."""
        try:
            self.port = int(self.wait_for(r"HTTP server on http://127\.0\.0\.1:(\d+)", START_S)[1])
            self.wait_for(r"daemon started as", START_S)
        except BaseException:
            self.kill()
            raise
        return self

    def get(self, path: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def json(self, path: str, token: str | None = None, method: str = "GET") -> Any:
        return json.loads(self.get(path, token, method)[1])

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def first_names(fake: FakeMailchimp) -> dict[str, Any]:
    return {m["email_address"]: m["merge_fields"].get("FNAME") for m in fake.members("L1").values()}
