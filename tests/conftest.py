"""Shared fixtures: a migrated store on SQLite, and on PostgreSQL when one is configured."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from syncbridge.store.engine import open_engine


def _own_database(variable: str) -> None:
    """Under pytest-xdist, give this worker a database of its own beside the configured one
    (`test` → `test_gw0`), so that workers never drop each other's tables."""
    worker, base = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(variable)
    if not worker or not base:
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"{url.database}_{worker}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if url.get_backend_name() == "postgresql":
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if found.first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
    engine.dispose()
    os.environ[variable] = url.set(database=name).render_as_string(hide_password=False)


_own_database("SYNCBRIDGE_TEST_POSTGRES_URL")
_own_database("SYNCBRIDGE_TEST_MARIADB_URL")
POSTGRES_URL = os.environ.get("SYNCBRIDGE_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _reset_postgres(url: str) -> None:
    from syncbridge.store.engine import create_store_engine

    engine = create_store_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with an empty schema: a SQLite file, or the test PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cache.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("SYNCBRIDGE_TEST_POSTGRES_URL is not set")
    _reset_postgres(POSTGRES_URL)
    yield POSTGRES_URL


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = open_engine(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding what `syncbridge init` writes, as the current directory, with no
    store or Mailchimp key from the environment (the list id is set, as a user would)."""
    from typer.testing import CliRunner

    from syncbridge.cli import app

    monkeypatch.chdir(tmp_path)
    for var in ("SYNCBRIDGE_STORE__URL", "SYNCBRIDGE_CONFIG", "MAILCHIMP_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MAILCHIMP_LIST_ID", "a1b2c3d4e5")  # the config init writes reads it
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    return tmp_path
