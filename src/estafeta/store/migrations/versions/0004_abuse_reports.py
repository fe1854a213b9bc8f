"""Abuse reports mailed to abuse@ and postmaster@ the platform's domains; who terminated an account, and why.

Revision ID: 0004_abuse_reports
Revises: 0003_bigint_ids
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import estafeta.store.models

revision = "0004_abuse_reports"
down_revision = "0003_bigint_ids"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = estafeta.store.models.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "abuse_reports",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("received_at", Utc(timezone=True), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("reporter", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("account_id", BigId, nullable=True),
        sa.Column("message_id", sa.String(length=40), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("matched_by", sa.String(length=20), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("review_id", BigId, nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_abuse_reports_account", "abuse_reports", ["account_id", "id"])
    op.add_column("accounts", sa.Column("terminated_at", Utc(timezone=True), nullable=True))
    op.add_column("accounts", sa.Column("terminated_by", sa.String(length=200), nullable=True))
    op.add_column("accounts", sa.Column("termination_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("termination_reason")
        batch.drop_column("terminated_by")
        batch.drop_column("terminated_at")
    op.drop_index("ix_abuse_reports_account", table_name="abuse_reports")
    op.drop_table("abuse_reports")
