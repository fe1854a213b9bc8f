"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from estafeta.store.db import Database, make_engine, migrate
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


@pytest.mark.timeout(90)  # without the lock they deadlock on each other's DDL
def test_nodes_starting_together_migrate_an_empty_database_once(pg_url: str) -> None:
    """Three nodes migrate one empty PostgreSQL schema at the same moment: all succeed, one schema results."""
    engines = [make_engine(pg_url) for _ in range(3)]
    start = threading.Barrier(len(engines))
    failures: list[BaseException] = []

    def node(engine: object) -> None:
        start.wait()
        try:
            migrate(engine)  # type: ignore[arg-type]
        except BaseException as exc:  # every node's failure is reported, not only the first
            failures.append(exc)

    threads = [threading.Thread(target=node, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert failures == []
        with engines[0].connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        for engine in engines:
            engine.dispose()
