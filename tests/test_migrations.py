"""Schema changes go through Alembic; the migrations must build exactly the models' schema."""

from __future__ import annotations

from typing import Any

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


def test_tag_history_starts_with_the_tags_profiles_hold(tmp_path: Any) -> None:
    """Upgrading a cache that holds rule results (0006 → 0007) opens a history row per tag
    held, with no entry time: members now, not the day's entries."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0006")
    with engine.begin() as conn:
        for pid, tags in ((1, '["Buyer", "VIP"]'), (2, "[]"), (3, '["Buyer"]')):
            conn.execute(text(
                "INSERT INTO profile_rules (profile_id, traits, tags, segments, content, "
                "explain) VALUES (:p, '{}', :t, '[]', '{}', '{}')"), {"p": pid, "t": tags})  # fmt: skip
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tag, profile_id, entered_at, exited_at FROM tag_membership")
        ).all()
    assert sorted(rows) == [("Buyer", 1, None, None), ("Buyer", 3, None, None),
                            ("VIP", 1, None, None)]  # fmt: skip
