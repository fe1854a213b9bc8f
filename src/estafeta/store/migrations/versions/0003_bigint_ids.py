"""Every id is 64-bit on PostgreSQL too: the tables whose ids were 32-bit, and the columns that refer to them.

SQLite's INTEGER is 64-bit already, so only PostgreSQL changes. The sequences behind the serial ids are
widened as well (a sequence created `AS integer` would stop at 2^31 - 1 whatever the column's type).

Revision ID: 0003_bigint_ids
Revises: 0003_dashboard
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_bigint_ids"
down_revision = "0003_dashboard"
branch_labels = None
depends_on = None

# Tables whose `id` was a 32-bit serial.
SERIAL_IDS = (
    "accounts",
    "api_keys",
    "domains",
    "smtp_credentials",
    "admin_keys",
    "lists",
    "segments",
    "campaigns",
    "webhook_endpoints",
    "postmaster_stats",
    "reviews",
    "users",
    "invitations",
    "plans",
)
# 32-bit columns that hold one of those ids.
REFERENCES = (
    ("api_keys", "account_id"),
    ("domains", "account_id"),
    ("messages", "account_id"),
    ("deliveries", "account_id"),
    ("events", "account_id"),
    ("smtp_credentials", "account_id"),
    ("suppressions", "account_id"),
    ("suppression_audit", "account_id"),
    ("account_streams", "account_id"),
    ("lists", "account_id"),
    ("contacts", "account_id"),
    ("subscriptions", "list_id"),
    ("segments", "account_id"),
    ("segments", "list_id"),
    ("campaigns", "account_id"),
    ("campaigns", "list_id"),
    ("campaigns", "segment_id"),
    ("campaign_recipients", "campaign_id"),
    ("tracking_preferences", "account_id"),
    ("webhook_endpoints", "account_id"),
    ("webhook_deliveries", "endpoint_id"),
    ("webhook_deliveries", "account_id"),
    ("sending_standing", "account_id"),
    ("reviews", "account_id"),
    ("review_audit", "review_id"),
    ("account_plans", "account_id"),
    ("account_plans", "plan_id"),
    ("invitations", "account_id"),
    ("invitations", "invited_by"),
    ("memberships", "user_id"),
    ("memberships", "account_id"),
    ("usage_counters", "account_id"),
    ("web_sessions", "user_id"),
    ("web_sessions", "account_id"),
)


def _retype(target: type[sa.Integer], sequence_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in SERIAL_IDS:
        op.alter_column(table, "id", type_=target(), existing_nullable=False)
        op.execute(
            sa.text(
                f"DO $$ DECLARE s text := pg_get_serial_sequence('{table}', 'id'); BEGIN "
                f"IF s IS NOT NULL THEN EXECUTE format('ALTER SEQUENCE %s AS {sequence_type}', s); END IF; "
                "END $$"
            )
        )
    for table, column in REFERENCES:
        op.alter_column(table, column, type_=target())


def upgrade() -> None:
    _retype(sa.BigInteger, "bigint")


def downgrade() -> None:
    _retype(sa.Integer, "integer")
