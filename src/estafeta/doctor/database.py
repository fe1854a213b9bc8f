"""The database: reachable, migrated to the schema this version expects, and on the same time as us."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from estafeta.config import Settings
from estafeta.doctor.check import Check
from estafeta.store.db import Database
from estafeta.store.health import SchemaState, schema_state, server_now

MIGRATE_FIX = (
    "run `estafeta serve` (or any estafeta command that opens the database, e.g. `estafeta accounts "
    "list`): it migrates the schema at start"
)


def _target(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


def _missing_sqlite_file(settings: Settings) -> Path | None:
    """A SQLite database file that does not exist (connecting would create it empty)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database).expanduser()
    return None if path.is_file() else path


def _schema(state: SchemaState, target: str) -> Check:
    heads = ", ".join(state.heads)
    if state.unknown:
        return Check(
            "database schema",
            target,
            "fail",
            f"at revision {', '.join(state.current)}, which this version does not know (a newer Estafeta "
            f"migrated it; this one expects {heads})",
            "run the Estafeta version that migrated the database (upgrade this installation)",
        )
    if state.current != state.heads:
        found = ", ".join(state.current) or "no schema (never migrated)"
        return Check(
            "database schema", target, "fail", f"at {found}; this version expects {heads}", MIGRATE_FIX
        )
    return Check("database schema", target, "pass", f"at the newest revision ({heads})")


def _skew(
    database_now: datetime | None, before: float, after: float, settings: Settings, target: str
) -> Check:
    if database_now is None:
        return Check("clock: database", target, "pass", "SQLite runs on this machine's clock")
    here = datetime.fromtimestamp((before + after) / 2, UTC)
    skew = (database_now - here).total_seconds()
    allowed = settings.doctor.max_clock_skew + (after - before) / 2  # the round trip blurs the reading
    detail = f"database server's clock is {abs(skew):.3f} s {'ahead of' if skew > 0 else 'behind'} this one"
    if abs(skew) <= allowed:
        return Check("clock: database", target, "pass", detail)
    return Check(
        "clock: database",
        target,
        "fail",
        f"{detail} (more than {settings.doctor.max_clock_skew:g} s): leases, retries and rate windows "
        "disagree between machines",
        "keep both clocks synchronised with NTP (chrony or systemd-timesyncd) on this machine and the "
        "database server",
    )


def check_database(settings: Settings) -> tuple[list[Check], Database | None]:
    """The database rows, and the database itself when it is reachable and migrated (for later checks).

    Runs on a worker thread (blocking I/O). Nothing is created or migrated: a missing SQLite file is
    reported, not made."""
    target = _target(settings)
    missing = _missing_sqlite_file(settings)
    if missing is not None:
        return [
            Check(
                "database reachable",
                target,
                "fail",
                f"{missing} does not exist",
                f"fix database_url, or create the database: {MIGRATE_FIX}",
            )
        ], None
    db = Database(settings.database_url)
    try:
        with db.engine.connect() as conn:
            state = schema_state(conn)
            before = time.time()
            database_now = server_now(conn)
            after = time.time()
    except SQLAlchemyError as exc:
        db.close()
        reason = str(exc.orig if getattr(exc, "orig", None) is not None else exc).strip().splitlines()[0]
        return [
            Check(
                "database reachable",
                target,
                "fail",
                reason,
                "start the database server, or fix database_url (host, port, user, password, database)",
            )
        ], None
    rows = [
        Check("database reachable", target, "pass", f"connected ({db.engine.dialect.name})"),
        _schema(state, target),
        _skew(database_now, before, after, settings, target),
    ]
    if rows[1].status != "pass":
        db.close()
        return rows, None
    return rows, db
