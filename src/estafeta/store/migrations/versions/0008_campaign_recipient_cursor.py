"""Campaigns fix their recipients in chunks: a cursor (the last contact id done) and the time all were fixed;
subscriptions are indexed by list, status and contact so each chunk is a range scan.

Revision ID: 0008_campaign_recipient_cursor
Revises: 0007_audit_log
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from estafeta.store.models import UtcDateTime

revision = "0008_campaign_recipient_cursor"
down_revision = "0007_audit_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recipients_cursor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("recipients_fixed_at", UtcDateTime(timezone=True), nullable=True))
    # Campaigns started before this revision fixed all of their recipients when they started.
    op.execute("UPDATE campaigns SET recipients_fixed_at = started_at WHERE started_at IS NOT NULL")
    op.execute(
        "UPDATE campaigns SET recipients_fixed_at = created_at WHERE recipients_fixed_at IS NULL AND "
        "EXISTS (SELECT 1 FROM campaign_recipients r WHERE r.campaign_id = campaigns.id)"
    )
    op.drop_index("ix_subscriptions_list", table_name="subscriptions")
    op.create_index("ix_subscriptions_list", "subscriptions", ["list_id", "status", "contact_id"])


def downgrade() -> None:
    op.drop_index("ix_subscriptions_list", table_name="subscriptions")
    op.create_index("ix_subscriptions_list", "subscriptions", ["list_id", "status"])
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("recipients_fixed_at")
        batch_op.drop_column("recipients_cursor")
