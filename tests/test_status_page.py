"""The daemon's status page (issue 16, point 8) in a real headless browser: Debian's chromium
loads `/` from a daemon on the test data; the numbers it shows must be those of
`syncbridge status --json`, and a screenshot is saved."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from .daemons import TOKEN, Daemon, env, eventually, export, first_names, person, write_setup
from .fakes.mailchimp import FakeMailchimp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Cells(HTMLParser):
    """Every element's data-* attributes, as (attributes of the row, attributes of the cell)."""

    def __init__(self) -> None:
        super().__init__()
        self.row: dict[str, str] = {}
        self.found: list[tuple[dict[str, str], dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        data = {k.removeprefix("data-"): v or "" for k, v in attrs if k.startswith("data-")}
        if tag == "tr":
            self.row = data
        elif data:
            self.found.append((dict(self.row), data))

    def value(self, row_key: str, row_value: str, name: str) -> int:
        for row, cell in self.found:
            if row.get(row_key) == row_value and name in cell:
                return int(cell[name])
        raise KeyError((row_key, row_value, name))


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    with FakeMailchimp() as server:
        server.add_list("L1")
        yield server


def _status(config: Path) -> dict[str, Any]:
    shown = subprocess.run(
        [sys.executable, "-c", "from syncbridge.cli import main; main()", "status", "--json",
         "-c", str(config)], env=env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium)")
def test_the_status_page_shows_what_status_json_says(tmp_path: Path, fake: FakeMailchimp) -> None:
    export(tmp_path, [person(i) for i in range(1, 13)] + [person(13, email="not an address")])
    config = write_setup(tmp_path, fake, f"sqlite:///{tmp_path / 'cache.db'}")
    daemon = Daemon(config).started()
    try:
        eventually(lambda: len(first_names(fake)) == 12, 60, "the first load reached Mailchimp")
        eventually(lambda: all(c["lag"] == 0 for c in _status(config)["consumers"]), 60,
                   "every consumer caught up")  # fmt: skip
        url = f"http://127.0.0.1:{daemon.port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401  # the admin token is set: the page asks for it
        bearer = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(bearer, timeout=10) as page:
            assert page.status == 200 and "text/html" in page.headers["Content-Type"]
        dom = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
             f"{url}?token={TOKEN}"], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "<h1>syncbridge</h1>" in dom.stdout, dom.stderr[-2000:]
        shot = tmp_path / "status-page.png"
        subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
             "--window-size=1280,1400", f"--screenshot={shot}", f"{url}?token={TOKEN}"],
            capture_output=True, timeout=120,
        )  # fmt: skip
        assert shot.stat().st_size > 10_000
        status = _status(config)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output
    cells = Cells()
    cells.feed(dom.stdout)
    for stream in status["streams"]:
        for name in ("records", "deleted", "errors"):
            assert cells.value("stream", stream["stream"], name) == stream[name], (stream, name)
    assert status["streams"][0]["errors"] >= 1  # the broken address is on the page too
    for consumer in status["consumers"]:
        assert cells.value("consumer", consumer["consumer"], "lag") == consumer["lag"]
        assert cells.value("consumer", consumer["consumer"], "offset") == consumer["offset"]
    for job in status["jobs"]:
        assert cells.value("job", job["job"], "failures") == (job["failures"] or 0)
    profiles = [cell["profiles"] for _, cell in cells.found if "profiles" in cell]
    assert profiles == [str(status["profiles"]["live"])]
