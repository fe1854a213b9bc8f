"""PostgreSQL's pool: a connection that sat idle is tested before use, so one the server closed meanwhile is
replaced instead of failing a transaction."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Connection, text

from estafeta.store import db as store_db
from estafeta.store.db import Database


def _backend_pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_an_idle_connection_closed_by_the_server_is_replaced(
    pg_url: str, pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "PING_AFTER_IDLE", 0.0)  # every pooled connection counts as idle
    database = Database(pg_url)
    try:
        first = database.call(_backend_pid)
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        assert database.call(_backend_pid) != first
    finally:
        database.close()
