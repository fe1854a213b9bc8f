"""DKIM keys per selector (`dkim_keys`), for rotation and dual signing; messages name the keys they carry.

The key each domain had becomes its first `active` key under the same selector. Columns are added and
dropped in place (`recreate="never"`, SQLite 3.35+): recreating `domains` or `messages` on SQLite would
drop the old table, and with it, through ON DELETE CASCADE, the rows that refer to it.

Revision ID: 0004_dkim_keys
Revises: 0004_abuse_reports
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import estafeta.store.models

revision = "0004_dkim_keys"
down_revision = "0004_abuse_reports"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = estafeta.store.models.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "dkim_keys",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("domain_id", BigId, nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("algorithm", sa.String(length=20), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", Utc(timezone=True), nullable=False),
        sa.Column("verified_at", Utc(timezone=True), nullable=True),
        sa.Column("activated_at", Utc(timezone=True), nullable=True),
        sa.Column("retiring_at", Utc(timezone=True), nullable=True),
        sa.Column("retired_at", Utc(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain_id", "selector"),
    )
    op.create_index(op.f("ix_dkim_keys_domain_id"), "dkim_keys", ["domain_id"], unique=False)
    op.execute(
        "INSERT INTO dkim_keys "
        "(domain_id, selector, algorithm, private_key, state, created_at, activated_at) "
        "SELECT id, dkim_selector, dkim_algorithm, dkim_private_key, 'active', created_at, created_at "
        "FROM domains"
    )
    with op.batch_alter_table("domains", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("dkim_selector")
        batch_op.drop_column("dkim_algorithm")
        batch_op.drop_column("dkim_private_key")
    with op.batch_alter_table("messages", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("dkim_keys", sa.String(length=100), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("dkim_keys")
    with op.batch_alter_table("domains", schema=None, recreate="never") as batch_op:
        for name, kind in (
            ("dkim_selector", sa.String(length=63)),
            ("dkim_algorithm", sa.String(length=20)),
            ("dkim_private_key", sa.Text()),
        ):
            batch_op.add_column(sa.Column(name, kind, server_default="", nullable=False))
    # Each domain keeps the key it signs with (its newest active one; dual signing cannot be kept).
    for column in ("selector", "algorithm", "private_key"):
        op.execute(
            f"UPDATE domains SET dkim_{column} = (SELECT k.{column} FROM dkim_keys k "
            "WHERE k.domain_id = domains.id ORDER BY k.state = 'active' DESC, k.id DESC LIMIT 1)"
        )
    op.drop_index(op.f("ix_dkim_keys_domain_id"), table_name="dkim_keys")
    op.drop_table("dkim_keys")
