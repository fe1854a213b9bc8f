"""API keys have a scope: send, read or full; the keys made before scopes existed keep doing everything.

Revision ID: 0006_api_key_scopes
Revises: 0005_domain_checks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_api_key_scopes"
down_revision = "0005_domain_checks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", sa.String(length=10), server_default="full", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("scope")
