"""segment_membership, tag_membership: indexes on entered_at and exited_at

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 22:20:00

The status page counts each segment's and tag's entries and exits of the last day every time
it loads (it reloads itself every 15 s); without these, each count read the whole history,
which only grows.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
TABLES = ("segment_membership", "tag_membership")
COLUMNS = ("entered_at", "exited_at")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in COLUMNS:
                batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in COLUMNS:
                batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
