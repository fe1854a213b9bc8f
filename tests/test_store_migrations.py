"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from estafeta.store.db import MIGRATIONS, Database, make_engine, migrate
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


def test_waited_bodies_move_from_platform_state_to_their_table(db_url: str) -> None:
    """A database at revision 0008 remembers retention's waited messages as one space-separated value; the
    upgrade moves them (those that still exist) to `waited_bodies` and drops the value."""
    engine = make_engine(db_url)
    try:
        _upgrade(engine, "0008_campaign_recipient_cursor")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, name, status, sending_tier, created_at) "
                    "VALUES (1, 'acme', 'active', 0, CURRENT_TIMESTAMP)"
                )
            )
            for message_id in ("msg_a", "msg_b"):
                conn.execute(
                    text(
                        "INSERT INTO messages (id, account_id, stream, source, from_address, subject, "
                        "message_id_header, raw, size, smtputf8, tags, metadata, dkim_keys, created_at) "
                        "VALUES (:id, 1, 'transactional', 'api', 'a@acme.test', '', '<x@acme.test>', :raw, "
                        "1, false, '[]', '{}', '', CURRENT_TIMESTAMP)"
                    ),
                    {"id": message_id, "raw": b"x"},
                )
            conn.execute(
                text("INSERT INTO platform_state (key, value) VALUES ('retention_bodies_waiting', :value)"),
                {"value": "msg_a msg_gone msg_b"},
            )
        migrate(engine)
        with engine.connect() as conn:
            moved = conn.scalars(text("SELECT message_id FROM waited_bodies ORDER BY message_id")).all()
            state = conn.scalars(text("SELECT key FROM platform_state")).all()
        assert moved == ["msg_a", "msg_b"]
        assert "retention_bodies_waiting" not in state
    finally:
        engine.dispose()


def _upgrade(engine: Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
