"""Warm-up limits count an account's queued recipients over 24 hours in every storing transaction: a partial
index of queued events lets that count read the index alone, where it read every event of the window.

Revision ID: 0010_queued_events_index
Revises: 0009_waited_bodies
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_queued_events_index"
down_revision = "0009_waited_bodies"
branch_labels = None
depends_on = None

_QUEUED = "type = 'queued'"


def upgrade() -> None:
    op.create_index(
        "ix_events_queued",
        "events",
        ["account_id", "created_at", "type"],
        sqlite_where=sa.text(_QUEUED),
        postgresql_where=sa.text(_QUEUED),
    )


def downgrade() -> None:
    op.drop_index("ix_events_queued", table_name="events")
