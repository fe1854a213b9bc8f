"""Engine set-up and the async bridge: store functions run on a worker thread in one transaction.

SQLite gets one writer thread (it allows one writer at a time anyway) in WAL mode with full fsync, so a
202/250 is only answered after the commit is on disk. PostgreSQL gets a small thread pool. A short SQLite
transaction may instead run on the event loop's own thread (`Database.run_inline`, see there).

SQLite transactions of every process queue at a writer gate (`WriterGate`) rather than in SQLite's busy
handler: that handler sleeps ever longer between tries (up to 100 ms), so a process that waits wakes up
late and mostly finds the lock taken again; under a stream of API commits, delivery's commits waited
seconds each. The gate is an exclusive lock on a file beside the database, polled every millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

P = ParamSpec("P")
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT = 30.0


GATE_POLL = 0.001  # seconds between tries for the writer gate
PING_AFTER_IDLE = 1.0  # seconds a pooled PostgreSQL connection may sit idle before it is tested on checkout


class DatabaseBusy(Exception):
    """SQLite's write lock could not be had within the busy timeout (other processes kept writing): the
    transaction did nothing, and the same work may be tried again shortly."""


class DatabaseConflict(DatabaseBusy):
    """PostgreSQL aborted the transaction as a deadlock's victim or for a serialisation conflict with a
    concurrent one: it did nothing, and written again it usually succeeds at once."""


CONFLICTS = frozenset({"40001", "40P01"})  # SQLSTATE serialization_failure, deadlock_detected


def _conflict(error: BaseException | None) -> bool:
    return getattr(error, "sqlstate", None) in CONFLICTS


class WriterGate:
    """One SQLite transaction at a time across the processes sharing a database file: an exclusive
    `flock` on `<database>-gate`, taken before BEGIN and given back after COMMIT or ROLLBACK.

    Every Estafeta transaction on SQLite takes the write lock (BEGIN IMMEDIATE), so the gate changes no
    outcome, only who waits how: a millisecond at most after the gate is free, instead of SQLite's
    growing sleeps. The kernel drops the lock of a process that dies. Writers outside Estafeta (the
    sqlite3 shell) skip the gate and are still waited for by SQLite's busy handler.

    Waiters poll rather than block in `flock` on purpose: a blocked waiter is handed the gate the moment
    it is released, so processes strictly alternate (about one transaction per turn instead of ten), and
    each turn costs a process switch, GIL hand-overs and SQLite re-reading the pages the other process
    changed: with four processes writing, blocking waits (a taker thread, or a signal to end the wait)
    took 40% more CPU per transaction and committed 35% fewer, and the SMTP relay bench lost a fifth of
    its rate; a waiting poll costs about 3% of a core."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.timeout = timeout
        self._fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write access
        self._thread = threading.Lock()  # flock does not keep apart two threads sharing the descriptor

    def __enter__(self) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._thread.acquire(timeout=self.timeout):
            raise DatabaseBusy("the database is busy")
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._thread.release()
                    raise DatabaseBusy("the database is busy") from None
                time.sleep(GATE_POLL)

    def try_enter(self) -> bool:
        """Take the gate if it is free at once (True), else leave it (False); never waits."""
        if not self._thread.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._thread.release()
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def make_engine(url: str, busy_timeout: float = BUSY_TIMEOUT) -> Engine:
    """An engine with the pragmas and pool settings Estafeta relies on; a SQLite writer waits up to
    `busy_timeout` seconds for the write lock."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Every transaction ends in COMMIT or ROLLBACK (`Database.transaction`), and a Connection closed with
        # one still open rolls it back itself: the pool's own rollback at every return is left out.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout},
            pool_reset_on_return=None,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below control transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Take the write lock up front (no upgrade deadlocks), on the driver: every transaction does it.
            # Its errors are raised as SQLAlchemy raises a statement's ("database is locked": DatabaseBusy).
            try:
                conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise OperationalError("BEGIN IMMEDIATE", None, error) from error

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_reset_on_return=None)  # as above

    # A pooled connection is tested before use only after it sat idle (the server may have closed it, or
    # restarted, meanwhile): a ping at every checkout was a round trip per transaction, and a connection
    # handed back moments ago is alive. A connection that died anyway fails its transaction, and SQLAlchemy
    # then drops every connection of the pool.
    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:  # the pool discards it and checks out another (or a new) connection
            raise DisconnectionError(str(error)) from error

    return engine


MIGRATION_LOCK = 0x657374_6D6967  # PostgreSQL advisory lock key ("est", "mig"): one migrator at a time


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent).

    Nodes of a cluster start together on one PostgreSQL: each takes a transaction-scoped advisory lock
    first, so one migrates while the others wait and then find the schema at head, instead of all creating
    the same tables at once. (SQLite's `BEGIN IMMEDIATE` already lets one writer in.)"""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """Runs store functions `fn(conn, ...)` in a transaction on a worker thread."""

    def __init__(self, url: str, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # For connections of their own beside the pool (advisory locks, LISTEN): psycopg's form of the URL.
        self.libpq_url = (
            None
            if self.is_sqlite
            else make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        self._executor = ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else 8, thread_name_prefix="estafeta-db"
        )
        database = make_url(url).database if self.is_sqlite else None
        self._gate = (
            WriterGate(Path(f"{database}-gate"), busy_timeout)
            if database and database != ":memory:"
            else contextlib.nullcontext()
        )
        self._turn_conn: Connection | None = None  # `writer_turn`'s, kept between turns

    def migrate(self) -> None:
        migrate(self.engine)

    def call(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` in one transaction on the calling thread (CLI and tests); `DatabaseBusy` if SQLite's
        write lock could not be had in time, `DatabaseConflict` if PostgreSQL aborted the transaction."""
        with self.engine.connect() as conn, self._gate:  # the pool's checkout and return outside the gate
            return self.transaction(conn, fn, *args, **kwargs)

    def transaction(
        self,
        conn: Connection,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`fn` in one transaction on `conn`, the gate already held; the driver's lock and conflict errors
        raised as `DatabaseBusy` and `DatabaseConflict`."""
        try:
            with conn.begin():
                return fn(conn, *args, **kwargs)
        except OperationalError as error:
            if self.is_sqlite and "database is locked" in str(error.orig):
                raise DatabaseBusy("the database is busy") from error
            if _conflict(error.orig):
                raise DatabaseConflict("the transaction conflicted with a concurrent one") from error
            raise
        except Exception as error:  # statements run on the driver's cursor (`store.driver`) raise its own
            if _conflict(error):
                raise DatabaseConflict("the transaction conflicted with a concurrent one") from error
            raise

    async def run_inline(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a short `fn` in one transaction on the event loop's own thread (SQLite file databases; `run`
        elsewhere): the writer gate is polled from the loop without blocking it, then the transaction runs
        and commits at once, the loop waiting only for its statements and its fsync.

        On the database thread the same transaction holds the gate much longer than its work takes: each
        statement and the commit give up the GIL, and taking it back waits for the loop's other work. With
        several front processes and delivery sharing SQLite's one writer, those held-but-idle milliseconds
        were most of every process's wait for the gate. Only for work that is quick whatever its input: the
        loop serves nothing else meanwhile."""
        if not self.gated:
            return await self.run(fn, *args, **kwargs)
        async with self.writer_turn() as conn:
            return self.transaction(conn, fn, *args, **kwargs)

    @property
    def gated(self) -> bool:
        """Whether transactions take the writer gate (a SQLite database file): `writer_turn` needs it."""
        return isinstance(self._gate, WriterGate)

    @contextlib.asynccontextmanager
    async def writer_turn(self) -> AsyncIterator[Connection]:
        """A connection of the pool once this process holds the writer gate, polled from the event loop
        without blocking it; the gate is given back on leaving. For `transaction`s run on the loop's thread
        without awaiting anything meanwhile (the gate keeps every other writer out); `DatabaseBusy` if the
        gate could not be had within the busy timeout."""
        gate = self._gate
        assert isinstance(gate, WriterGate), "writer_turn needs a SQLite database file"
        deadline = time.monotonic() + gate.timeout
        while not gate.try_enter():
            if time.monotonic() >= deadline:
                raise DatabaseBusy("the database is busy")
            await asyncio.sleep(GATE_POLL)
        try:
            yield self._turn_connection()
        finally:
            gate.__exit__()

    def _turn_connection(self) -> Connection:
        """One connection for every turn, taken from the pool once: only the holder of the gate uses it, and
        between transactions a SQLite connection holds no lock and no snapshot. Checking one out and back
        in at every transaction cost about a twentieth of a front process's event loop."""
        conn = self._turn_conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()  # an invalidated one (its driver connection failed) goes back to the pool
            conn = self._turn_conn = self.engine.connect()
        return conn

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` in one transaction on the database thread(s) without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.call, fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._turn_conn is not None:
            self._turn_conn.close()
        self.engine.dispose()
        if isinstance(self._gate, WriterGate):
            self._gate.close()
