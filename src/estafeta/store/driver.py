"""Driver-level SQL for the few statements run several times per message (claims, outcomes, accepting).

SQLAlchemy's statement building, cache-key and result handling cost more CPU than SQLite or PostgreSQL spend
on such small statements, so these run on the DB-API cursor of the caller's transaction instead. Times are
bound the way SQLAlchemy binds `UtcDateTime`: aware on PostgreSQL, naive UTC text on SQLite (its storage
format, "YYYY-MM-DD HH:MM:SS.ffffff", which compares as text in time order).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError


@contextmanager
def cursor(conn: Connection) -> Iterator[Any]:
    """A DB-API cursor in `conn`'s transaction (sqlite3 takes `:name`, psycopg `%(name)s` parameters)."""
    cur = conn.connection.cursor()
    try:
        yield cur
    finally:
        cur.close()


def sqlite_query(conn: Connection, statement: str, params: Sequence[Any]) -> list[Any]:
    """The rows of `statement` run on the sqlite3 connection of `conn`'s transaction (see `sqlite_many`)."""
    try:
        return conn.connection.driver_connection.execute(statement, params).fetchall()
    except sqlite3.Error as error:
        raise _as_sqlalchemy(statement, error) from error


def sqlite_many(conn: Connection, statement: str, rows: Iterable[Sequence[Any]]) -> None:
    """Run `statement` once per row on the sqlite3 connection of `conn`'s transaction. The driver's errors
    are raised as SQLAlchemy raises a statement's (`sqlalchemy.exc.IntegrityError`, `OperationalError` …),
    so callers see one kind of error whichever way a statement ran; parameters (message bodies, addresses)
    stay out of the error's text."""
    try:
        conn.connection.driver_connection.executemany(statement, rows)
    except sqlite3.Error as error:
        raise _as_sqlalchemy(statement, error) from error


def _as_sqlalchemy(statement: str, error: sqlite3.Error) -> BaseException:
    return DBAPIError.instance(statement, None, error, sqlite3.Error, hide_parameters=True)


def sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def read_time(value: str | datetime) -> datetime:
    """A time column's value from either driver, as an aware UTC datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def json_text(value: Any) -> str:
    """A JSON column's value as SQLAlchemy binds it (`json.dumps`); the empty list and dict, the most common
    values of tags, metadata and event data, without a trip through the encoder."""
    if not value and type(value) in (list, dict):
        return "[]" if type(value) is list else "{}"
    return json.dumps(value)
