"""drop profile.push_dirty: destinations claim from the journal into destination_queue

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:40:00

Profiles an older version still owed Mailchimp need no carrying over: an audience's first pass
as a destination takes every live profile and every profile it holds.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.drop_index("ix_profile_push_dirty")
        batch_op.drop_column("push_dirty")


def downgrade() -> None:
    import sqlalchemy as sa

    with op.batch_alter_table("profile", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("push_dirty", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index("ix_profile_push_dirty", ["push_dirty"], unique=False)
