"""tag_membership: when each profile got and lost each behaviour tag

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:00:00

The tags profiles hold now get open rows with no entry time (held since before the history was
kept): they count as members, never as the day's entries.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "tag_membership",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exited_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tag_membership", schema=None) as batch_op:
        batch_op.create_index("ix_tag_membership_open", ["tag", "exited_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_tag_membership_profile_id"), ["profile_id"], unique=False
        )
    _open_rows_for_current_tags()


def _open_rows_for_current_tags() -> None:
    conn = op.get_bind()
    results = sa.table("profile_rules", sa.column("profile_id"), sa.column("tags"))
    membership = sa.table(
        "tag_membership", sa.column("tag"), sa.column("profile_id"), sa.column("entered_at")
    )
    last = -1
    while True:
        rows = conn.execute(
            sa.select(results.c.profile_id, results.c.tags)
            .where(results.c.profile_id > last)
            .order_by(results.c.profile_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        held = []
        for profile_id, tags in rows:
            if isinstance(tags, str):  # JSON comes back as text where the dialect keeps it so
                tags = json.loads(tags)
            held += [{"tag": t, "profile_id": profile_id, "entered_at": None} for t in tags or []]
        if held:
            conn.execute(membership.insert(), held)


def downgrade() -> None:
    with op.batch_alter_table("tag_membership", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tag_membership_profile_id"))
        batch_op.drop_index("ix_tag_membership_open")
    op.drop_table("tag_membership")
