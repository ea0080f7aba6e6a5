"""`--log-level DEBUG` tells an operator what a sync did, and never a secret or an email
(issue 11, point 14).

A real `syncbridge --log-level DEBUG run --once` on the bundled sample exports, pushed to the
Mailchimp fake, must print a line for every API call (method, path, status, time), for every
committed page and for every stage's counts; and a Salesforce pull logs its calls without the
SOQL query strings. The sample data holds hundreds of email addresses, so a stray one shows.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from syncbridge_connectors.salesforce import SalesforceConnector
from typer.testing import CliRunner

from syncbridge.cli import app
from syncbridge.pipeline import run_cycle

from .builders import settings_from
from .fakes.mailchimp import FakeMailchimp
from .fakes.salesforce import FakeSalesforce

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"


def debug_run(folder: Path, fake: FakeMailchimp, *args: str) -> str:
    """`syncbridge --log-level DEBUG run --once` in its own process, as an operator runs it;
    returns everything it printed (stdout and stderr)."""
    env = {**os.environ, "MAILCHIMP_API_KEY": fake.api_key, "MAILCHIMP_LIST_ID": "L1"}
    done = subprocess.run(
        [sys.executable, "-c", "from syncbridge.cli import main; main()",
         "--log-level", "DEBUG", *args, "run", "--once"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.fixture
def bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, FakeMailchimp]]:
    """`syncbridge init`'s config and sample exports, pointed at the Mailchimp fake."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILCHIMP_LIST_ID", "L1")
    assert runner.invoke(app, ["init"]).exit_code == 0
    with FakeMailchimp() as fake:
        fake.add_list("L1")
        config = tmp_path / "config.toml"
        text = config.read_text()
        assert "\n[mailchimp]\n" in text
        config.write_text(
            text.replace("\n[mailchimp]\n", f'\n[mailchimp]\napi_base_url = "{fake.base_url}"\n')
        )
        yield tmp_path, fake


runner = CliRunner()


def test_debug_run_logs_api_calls_pages_and_stage_counts(
    bundled: tuple[Path, FakeMailchimp],
) -> None:
    folder, fake = bundled
    output = debug_run(folder, fake)
    calls = re.findall(
        r"DEBUG +syncbridge\.push\.client: Mailchimp (GET|POST|PUT|PATCH|DELETE) (/\S*) -> (\d{3}) "
        r"in \d+ ms \(attempt \d+\)",
        output,
    )
    assert len(calls) >= 5, output[-3000:]
    assert any(m == "POST" and p.startswith("/lists/L1") for m, p, _ in calls)
    assert any(m == "GET" and s == "200" for m, _, s in calls)
    pages = re.findall(
        r"DEBUG +syncbridge\.ingest: (\S+): page committed: \d+ read, inserted=\d+ updated=\d+ "
        r"unchanged=\d+ deleted=\d+ events=\d+ errors=\d+; cursor (?:moved to \S.*|not moved)",
        output,
    )
    assert {"crm/contacts", "shop/customers", "shop/orders", "web/events"} <= set(pages)
    for stage in ("ingest", "identity", "rules", "push"):
        assert re.search(rf"DEBUG +syncbridge\.pipeline: stage {stage} done: \{{", output), stage


def test_debug_run_prints_no_email_no_key(bundled: tuple[Path, FakeMailchimp]) -> None:
    folder, fake = bundled
    output = debug_run(folder, fake, "--log-format", "json")
    output += debug_run(folder, fake)  # the second cycle: nothing new, other lines
    assert re.search(r'"level": "debug", "logger": "syncbridge.push.client"', output)
    assert re.search(r'"logger": "syncbridge.ingest", "message": "\S+: page committed', output)
    assert re.search(r"DEBUG +syncbridge\.pipeline: stage identity done", output)
    assert EMAIL.findall(output) == []
    assert fake.api_key not in output
    assert fake.api_key.split("-")[0] not in output


def test_log_level_is_case_insensitive_and_checked() -> None:
    assert runner.invoke(app, ["--log-level", "debug", "--help"]).exit_code == 0
    result = runner.invoke(app, ["--log-level", "loud", "status"])
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error'" in said


@pytest.fixture
def salesforce(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as server:
        server.set_clock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
        monkeypatch.setattr(
            SalesforceConnector, "session_factory", staticmethod(server.http_session)
        )
        yield server


@pytest.mark.parametrize("bulk", [False, True])
def test_salesforce_calls_are_logged_without_queries_emails_or_secrets(
    salesforce: FakeSalesforce, tmp_path: Path, caplog: pytest.LogCaptureFixture, bulk: bool
) -> None:
    fake, c = salesforce, salesforce.credentials
    fake.insert_many(
        "Contact", [{"Email": f"person{i}@gmail.com", "LastName": f"L{i}"} for i in range(30)]
    )
    stream = {"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")}
    data = {
        "store": {"url": f"sqlite:///{tmp_path / 'sf.db'}"},
        "ingest": {"parallel": False},  # read here, so that caplog sees the connector's lines
        "sources": [{"name": "salesforce", "connector": "salesforce", "username": c.username,
                     "password": c.password, "security_token": c.security_token,
                     "domain": fake.login_domain, "streams": [stream],
                     **({"bulk_threshold": 1, "bulk_poll_s": 0} if bulk else {})}],
    }  # fmt: skip
    settings = settings_from(data, tmp_path)
    from syncbridge.store.engine import open_engine

    engine = open_engine(settings.config.store.url)
    with caplog.at_level(logging.DEBUG):
        run_cycle(settings, engine)
    engine.dispose()
    lines = [r.getMessage() for r in caplog.records]
    calls = [
        line for line in lines
        if re.fullmatch(r"Salesforce (GET|POST|PATCH|DELETE) /\S+ -> \d{3} in \d+ ms", line)
    ]  # fmt: skip
    assert any("/services/Soap/u/" in line for line in calls), lines  # the login
    assert any("/query" in line for line in calls), lines  # the read
    if bulk:
        assert any("/jobs/query" in line for line in calls), lines
    assert not [line for line in calls if "?" in line or "SELECT" in line]
    text = "\n".join(lines)
    assert EMAIL.findall(text) == []
    for secret in (c.password, c.security_token, fake.session_id):
        assert secret not in text
