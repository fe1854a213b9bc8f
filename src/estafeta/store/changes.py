"""Announcing a change of cached settings to every node (PostgreSQL NOTIFY; SQLite has no listeners)."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

CHANNEL = "estafeta_changes"


def announce(conn: Connection, topic: str) -> None:
    """Every node listening hears `topic` once this transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(CHANNEL, topic)))
