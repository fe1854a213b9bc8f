"""Sending-domain verification states; domains registered before are verified until their first check.

Revision ID: 0005_domain_checks
Revises: 0004_dkim_keys
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import estafeta.store.models

revision = "0005_domain_checks"
down_revision = "0004_dkim_keys"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = estafeta.store.models.UtcDateTime


def upgrade() -> None:
    table = op.create_table(
        "domain_checks",
        sa.Column("domain_id", BigId, nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("changed_at", Utc(timezone=True), nullable=False),
        sa.Column("checked_at", Utc(timezone=True), nullable=True),
        sa.Column("failing_since", Utc(timezone=True), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("domain_id"),
    )
    op.create_index("ix_domain_checks_checked_at", "domain_checks", ["checked_at"])
    # Domains that were sending keep sending until the scheduler's first check says otherwise (then the
    # grace period of a failing domain applies).
    domains = op.get_bind().execute(sa.text("SELECT id FROM domains")).all()
    now = datetime.now(UTC)
    op.bulk_insert(
        table,
        [{"domain_id": row.id, "state": "verified", "changed_at": now, "report": {}} for row in domains],
    )


def downgrade() -> None:
    op.drop_index("ix_domain_checks_checked_at", table_name="domain_checks")
    op.drop_table("domain_checks")
