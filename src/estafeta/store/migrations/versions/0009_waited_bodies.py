"""Retention remembers the messages it passed while they were still waiting in a table of their own, where it
used to keep their ids as one space-separated value in `platform_state` (rewritten whole on every run).

Revision ID: 0009_waited_bodies
Revises: 0008_campaign_recipient_cursor
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_waited_bodies"
down_revision = "0008_campaign_recipient_cursor"
branch_labels = None
depends_on = None

_STATE_KEY = "retention_bodies_waiting"


def upgrade() -> None:
    table = op.create_table(
        "waited_bodies",
        sa.Column(
            "message_id",
            sa.String(length=40),
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    bind = op.get_bind()
    remembered = bind.scalar(
        sa.text("SELECT value FROM platform_state WHERE key = :key"), {"key": _STATE_KEY}
    )
    if remembered:
        ids = sorted(set(remembered.split()))
        existing = set(
            bind.scalars(
                sa.text("SELECT id FROM messages WHERE id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"ids": ids},
            )
        )
        op.bulk_insert(table, [{"message_id": i} for i in ids if i in existing])
    op.execute(sa.text(f"DELETE FROM platform_state WHERE key = '{_STATE_KEY}'"))


def downgrade() -> None:
    bind = op.get_bind()
    ids = list(bind.scalars(sa.text("SELECT message_id FROM waited_bodies ORDER BY message_id")))
    if ids:
        bind.execute(
            sa.text("INSERT INTO platform_state (key, value) VALUES (:key, :value)"),
            {"key": _STATE_KEY, "value": " ".join(ids)},
        )
    op.drop_table("waited_bodies")
