"""Crashes and fault storms in the push, end to end through the real CLI (issue 10, point 4).

A scenario of three pushes: a first load; a second push that carries merge-field updates, tag
additions (one of them a new tag) and removals, an archive, an email change and a new member;
a third that undoes all of it. The process running a push is SIGKILLed right after Mailchimp
applied its k-th write call, for every k, and then simply run again; in another test a fifth of
all calls fail (429, 5xx, resets after the call was applied, answers held past the client's
timeout). Each time Mailchimp ends in exactly the state of an uninterrupted run, and one more
cycle makes no write call at all.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from syncbridge.cli import app
from syncbridge.store.engine import open_engine
from syncbridge.store.tables import Run

from .fakes.mailchimp import FakeMailchimp

runner = CliRunner()
FIELDS = ["id", "email", "first_name", "ltv", "optin", "tags"]
MAPPING = """
[identifiers]
email = "email"
external = { "crm" = "id" }
[attributes]
first_name = "first_name"
ltv = { field = "ltv", type = "number" }
accepts_email_marketing = { field = "optin", type = "boolean" }
shop_tags = "tags"
"""


def row(i: int, **kw: Any) -> dict[str, Any]:
    base = {"id": f"c{i}", "email": f"person{i}@gmail.com", "first_name": f"P{i}",
            "ltv": str(100 * i), "optin": "yes", "tags": "vip" if i % 2 else ""}  # fmt: skip
    return base | kw


FIRST = [row(i) for i in range(1, 9)]
SECOND = [
    row(1, ltv="999"),  # merge-field update
    row(2, first_name="Pat"),  # merge-field update
    row(3, tags="vip,gold"),  # a new tag
    row(4, tags="vip"),  # a tag addition
    row(5, tags=""),  # a tag removal
    # 6 is gone from the export: archived
    row(7, email="person7.new@gmail.com"),  # email change
    row(8),
    row(9),  # a new member
]
PHASES = {"first": FIRST, "second": SECOND, "undo": FIRST}


def write_setup(folder: Path, fake: FakeMailchimp, timeout_s: float = 30.0) -> Path:
    (folder / "mapping.toml").write_text(MAPPING)
    config = folder / "config.toml"
    config.write_text(f"""
[store]
url = "sqlite:///{folder / "cache.db"}"
[ingest]
parallel = false
[mailchimp]
api_key = "{fake.api_key}"
api_base_url = "{fake.base_url}"
timeout_s = {timeout_s}
retries = 6
[[mailchimp.audiences]]
name = "customers"
list_id = "L1"
tag_attributes = ["shop_tags"]
recreate_archived = true
[[mailchimp.audiences.merge_fields]]
tag = "FNAME"
name = "First Name"
source = "first_name"
[[mailchimp.audiences.merge_fields]]
tag = "LTV"
name = "Lifetime value"
type = "number"
source = "ltv"
[[sources]]
name = "crm"
connector = "files"
[[sources.streams]]
name = "contacts"
mapping = "mapping.toml"
path = "contacts.csv"
primary_key = "id"
snapshot = true
""")
    return config


def export(folder: Path, rows: list[dict[str, Any]]) -> None:
    path = folder / "contacts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    stamp = path.stat().st_mtime_ns + 1_000_000_000  # a new export, whatever the clock says
    os.utime(path, ns=(stamp, stamp))


def run_once(config: Path) -> None:
    result = runner.invoke(app, ["run", "--once", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "refused" not in result.output, result.output


def killed_run(config: Path, fake: FakeMailchimp, k: int, log: Path) -> int:
    """`syncbridge run --once` in a child process, SIGKILLed right after Mailchimp applied its
    k-th write call (before the answer leaves). Returns how many writes were applied."""
    applied = 0
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", "from syncbridge.cli import main; main()",
             "run", "--once", "-c", str(config)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def crash(method: str, path: str) -> None:
            nonlocal applied
            applied += 1
            if applied == k:
                os.kill(child.pid, signal.SIGKILL)

        fake.on_applied = crash
        try:
            child.wait(timeout=120)
        finally:
            fake.on_applied = None
    return applied


def mailchimp_state(fake: FakeMailchimp) -> dict[str, Any]:
    members = {
        m["email_address"]: (
            m["status"],
            {k: v for k, v in m["merge_fields"].items() if v not in ("", None)},
            frozenset(m["tags"]),
        )
        for m in fake.members("L1").values()
    }
    tags = {name for name, s in fake.segments("L1").items() if s["type"] == "static"}
    return {"members": members, "tags": tags, "fields": set(fake.merge_fields("L1"))}


def run_statuses(folder: Path) -> list[str]:
    engine = open_engine(f"sqlite:///{folder / 'cache.db'}")
    with engine.connect() as conn:
        statuses = list(conn.execute(select(Run.__table__.c.status)).scalars())
    engine.dispose()
    return statuses


def differences(got: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """What differs, member by member, for a readable failure."""
    out: dict[str, Any] = {}
    for email in got["members"].keys() | expected["members"].keys():
        have, want = got["members"].get(email), expected["members"].get(email)
        if have != want:
            out[email] = {"got": have, "expected": want}
    for key in ("tags", "fields"):
        if got[key] != expected[key]:
            out[key] = {"got": got[key], "expected": expected[key]}
    return out


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    with FakeMailchimp() as server:
        server.add_list("L1")
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run: Mailchimp's state after each phase, and each phase's writes."""
    folder = tmp_path_factory.mktemp("reference")
    with FakeMailchimp() as fake:
        fake.add_list("L1")
        config = write_setup(folder, fake)
        states, writes = {}, {}
        for phase, rows in PHASES.items():
            export(folder, rows)
            before = fake.write_calls()
            run_once(config)
            writes[phase] = fake.write_calls() - before
            states[phase] = mailchimp_state(fake)
    # the scenario carries every kind: upsert, rename, a tag created with its member, tag
    # additions and removals, archive
    assert writes["second"] >= 5 and writes["undo"] >= 5
    return {"states": states, "writes": writes}


def test_the_scenario_changes_what_it_says(reference: dict[str, Any]) -> None:
    second = reference["states"]["second"]["members"]
    assert second["person1@gmail.com"][1]["LTV"] == 999
    assert second["person6@gmail.com"][0] == "archived"
    assert "person7.new@gmail.com" in second and "person7@gmail.com" not in second
    assert "gold" in second["person3@gmail.com"][2]
    assert "vip" not in second["person5@gmail.com"][2]
    assert reference["states"]["undo"]["members"]["person6@gmail.com"][0] == "subscribed"


@pytest.mark.parametrize("phase", ["second", "undo"])
def test_a_kill_after_every_applied_write_ends_in_the_uninterrupted_state(
    fake: FakeMailchimp, tmp_path: Path, reference: dict[str, Any], phase: str
) -> None:
    writes = reference["writes"][phase]
    for k in range(1, writes + 1):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        with FakeMailchimp() as server:
            server.add_list("L1")
            config = write_setup(folder, server)
            for name, rows in PHASES.items():
                export(folder, rows)
                if name == phase:
                    applied = killed_run(config, server, k, folder / "killed.log")
                    assert applied >= k, (k, (folder / "killed.log").read_text())
                    run_once(config)  # the rerun after the crash
                    assert "interrupted" in run_statuses(folder), "the killed run was not marked"
                else:
                    run_once(config)
                expected = reference["states"][name]
                got = mailchimp_state(server)
                assert got == expected, f"k={k}, after {name}: {differences(got, expected)}"
            writes_before = server.write_calls()
            run_once(config)
            assert server.write_calls() == writes_before, f"k={k}: acknowledged state drifted"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fault_storm_ends_in_the_uninterrupted_state(
    fake: FakeMailchimp, tmp_path: Path, reference: dict[str, Any], seed: int
) -> None:
    config = write_setup(tmp_path, fake, timeout_s=0.4)
    fake.chaos(rate=0.2, seed=seed, hold_s=0.6)  # held answers outlast the client's timeout
    for phase, rows in PHASES.items():
        export(tmp_path, rows)
        for _ in range(4):  # a run that gave up after its retries is run again, as a daemon does
            result = runner.invoke(app, ["run", "--once", "-c", str(config)])
            if result.exit_code == 0:
                break
        assert result.exit_code == 0, result.output
        got = mailchimp_state(fake)
        expected = reference["states"][phase]
        assert got == expected, f"after {phase}: {differences(got, expected)}"
    assert fake._chaos is not None
    assert sum(fake._chaos.drawn.values()) >= 5, fake._chaos.drawn  # the storm did blow
    fake._chaos = None
    writes = fake.write_calls()
    run_once(config)
    assert fake.write_calls() == writes
