"""What the doctor asks the database: its schema revision against the code's, and its clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from estafeta.store.db import MIGRATIONS


@dataclass(frozen=True)
class SchemaState:
    current: tuple[str, ...]  # revisions the database is at (empty: never migrated)
    heads: tuple[str, ...]  # the newest revisions this code knows
    unknown: tuple[str, ...]  # current revisions this code does not know (a newer version migrated it)


def schema_state(conn: Connection) -> SchemaState:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    known = {revision.revision for revision in script.walk_revisions()}
    current = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    return SchemaState(
        current, tuple(sorted(script.get_heads())), tuple(r for r in current if r not in known)
    )


def server_now(conn: Connection) -> datetime | None:
    """The database server's clock (PostgreSQL); None for SQLite, which runs on this machine's."""
    if conn.dialect.name != "postgresql":
        return None
    value = conn.execute(text("SELECT now()")).scalar_one()
    assert isinstance(value, datetime)
    return value
