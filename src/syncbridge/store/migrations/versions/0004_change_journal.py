"""change journal, consumer offsets, destination queue

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("subject", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "consumer_offset",
        sa.Column("consumer", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("consumer"),
    )
    op.create_table(
        "destination_queue",
        sa.Column("destination", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("destination", "profile_id"),
    )


def downgrade() -> None:
    op.drop_table("destination_queue")
    op.drop_table("consumer_offset")
    op.drop_table("change")
