"""shopify_webhook: the Shopify webhook deliveries already applied, for de-duplication

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shopify_webhook",
        sa.Column("webhook_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id"),
    )
    with op.batch_alter_table("shopify_webhook", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shopify_webhook_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("shopify_webhook", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shopify_webhook_received_at"))
    op.drop_table("shopify_webhook")
