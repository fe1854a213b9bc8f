"""DMARC aggregate reports received; MTA-STS policies cached; TLS session counts and TLS-RPT reports sent.

Revision ID: 0003_dmarc_reports
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import estafeta.store.models

revision = "0003_dmarc_reports"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = estafeta.store.models.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "mta_sts_policies",
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("policy_id", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("mx", sa.JSON(), nullable=False),
        sa.Column("max_age", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("fetched_at", Utc(timezone=True), nullable=False),
        sa.Column("expires_at", Utc(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("domain", "policy_id"),
    )
    op.create_index("ix_mta_sts_policies_newest", "mta_sts_policies", ["domain", "fetched_at"])
    op.create_table(
        "tls_session_counts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("policy_domain", sa.String(length=255), nullable=False),
        sa.Column("policy_type", sa.String(length=20), nullable=False),
        sa.Column("policy_id", sa.String(length=32), nullable=False),
        sa.Column("result", sa.String(length=40), nullable=False),
        sa.Column("sending_ip", sa.String(length=45), nullable=False),
        sa.Column("mx_host", sa.String(length=255), nullable=False),
        sa.Column("receiving_ip", sa.String(length=45), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "day",
            "policy_domain",
            "policy_type",
            "policy_id",
            "result",
            "sending_ip",
            "mx_host",
            "receiving_ip",
            "detail",
            name="uq_tls_session_counts",
        ),
    )
    op.create_table(
        "tls_reports_sent",
        sa.Column("policy_domain", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("report_id", sa.String(length=100), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("sent_at", Utc(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("policy_domain", "day"),
    )
    op.create_table(
        "dmarc_reports",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("org_name", sa.String(length=255), nullable=False),
        sa.Column("org_email", sa.String(length=320), nullable=False),
        sa.Column("report_id", sa.String(length=255), nullable=False),
        sa.Column("begin_at", Utc(timezone=True), nullable=False),
        sa.Column("end_at", Utc(timezone=True), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("received_at", Utc(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_name", "report_id", name="uq_dmarc_reports_report"),
    )
    op.create_index("ix_dmarc_reports_domain", "dmarc_reports", ["domain", "end_at"])
    op.create_table(
        "dmarc_records",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("report_id", BigId, nullable=False),
        sa.Column("source_ip", sa.String(length=45), nullable=False),
        sa.Column("ptr", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("disposition", sa.String(length=20), nullable=False),
        sa.Column("dkim", sa.String(length=10), nullable=False),
        sa.Column("spf", sa.String(length=10), nullable=False),
        sa.Column("header_from", sa.String(length=255), nullable=False),
        sa.Column("envelope_from", sa.String(length=255), nullable=False),
        sa.Column("auth_results", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["report_id"], ["dmarc_reports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dmarc_records_report_id", "dmarc_records", ["report_id"])


def downgrade() -> None:
    op.drop_index("ix_dmarc_records_report_id", table_name="dmarc_records")
    op.drop_table("dmarc_records")
    op.drop_index("ix_dmarc_reports_domain", table_name="dmarc_reports")
    op.drop_table("dmarc_reports")
    op.drop_table("tls_reports_sent")
    op.drop_table("tls_session_counts")
    op.drop_index("ix_mta_sts_policies_newest", table_name="mta_sts_policies")
    op.drop_table("mta_sts_policies")
