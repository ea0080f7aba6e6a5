"""Schema changes go through Alembic; the migrations must build exactly the models' schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from syncbridge.store.migrate import current_revision, head_revision, upgrade
from syncbridge.store.tables import metadata


def test_start_applies_migrations_to_head(engine: Engine) -> None:
    assert current_revision(engine) == head_revision(engine)
    tables = set(inspect(engine).get_table_names())
    assert {
        "source_record",
        "identity",
        "profile",
        "event",
        "stream_cursor",
        "run",
        "record_error",
        "profile_merge",
        "alembic_version",
    } <= tables


def test_upgrade_again_changes_nothing(engine: Engine) -> None:
    assert upgrade(engine) is False


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []
