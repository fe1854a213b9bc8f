"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from estafeta.store.db import Database
from estafeta.store.models import MAX_ID, Base


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_every_id_column_holds_64_bits(db: Database) -> None:
    with db.engine.connect() as conn:
        inspector = inspect(conn)
        narrow = [
            f"{table}.{column['name']}"
            for table in inspector.get_table_names()
            for column in inspector.get_columns(table)
            if (column["name"] == "id" or column["name"].endswith("_id"))
            and str(column["type"]).upper() in ("INTEGER", "SMALLINT")
            and not db.is_sqlite  # SQLite's INTEGER is 64-bit
        ]
    assert narrow == []
    with db.engine.begin() as conn:  # the largest id is stored and read back on the serial-id tables too
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, status, sending_tier, created_at) "
                "VALUES (:id, 'big', 'active', 0, CURRENT_TIMESTAMP)"
            ),
            {"id": MAX_ID},
        )
        assert conn.execute(text("SELECT id FROM accounts WHERE name = 'big'")).scalar_one() == MAX_ID
