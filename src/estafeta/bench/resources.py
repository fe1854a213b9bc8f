"""What several benchmarks share: a database per backend, and CPU time over a tree of processes.

The machine that runs a benchmark is often shared, so wall-clock rates move with the neighbours' load;
CPU-seconds per message, summed over every process of the system under test, move much less. On
PostgreSQL part of the storing work runs in the database server, so its CPU is read too when the server
runs on the same machine (all of its processes: figures taken while others use it are too high).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
from collections.abc import Iterable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path

import psutil
import psycopg
from sqlalchemy.engine import make_url

BACKENDS = ("sqlite", "postgresql")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # where several nodes share their limits
JOIN_TIMEOUT = 30.0  # seconds a benchmark child that sent its results gets to exit
PR_SET_PDEATHSIG = 1  # prctl(2)


def end_with_parent() -> None:
    """In a benchmark's child process (a node, the sink, the clients): SIGTERM when the process that started
    it ends, so that a benchmark killed or failing leaves nothing behind; if that process already ended
    before this ran, end now."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent or parent == 1:
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def scratch_schema(url: str, prefix: str = "bench") -> Iterator[str]:
    """A PostgreSQL URL whose connections use a new schema, dropped afterwards."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        base = make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def database_url(backend: str, workdir: Path, postgresql_url: str) -> Iterator[str]:
    """A fresh database of `backend`: a SQLite file under `workdir`, or a scratch PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
    elif backend == "postgresql":
        with scratch_schema(postgresql_url) as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r} (sqlite or postgresql)")


def tree_cpu_seconds(roots: Iterable[int], exclude: Iterable[int] = ()) -> float:
    """User + system CPU seconds of the processes `roots` and their descendants, minus `exclude`'s trees.

    A process that already exited is not counted, so measure before stopping what is measured.
    """
    skipped: set[int] = set()
    for pid in exclude:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            skipped |= {pid} | {child.pid for child in process.children(recursive=True)}
    seen: set[int] = set()
    total = 0.0
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                if process.pid in seen or process.pid in skipped:
                    continue
                seen.add(process.pid)
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    total += times.user + times.system
    return total


def postgresql_server_pid(url: str) -> int | None:
    """The main process of the PostgreSQL server behind `url` when it runs on this machine (its backends
    and background workers are its children), else None."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as conn, contextlib.suppress(psutil.Error):
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        # Looked up while the connection is open: its backend process ends with it. A server elsewhere
        # (another host, a container) numbers its processes in its own space.
        backend = psutil.Process(row[0] if row else 0)
        if backend.name() == "postgres" and backend.parent() is not None:
            return backend.ppid()
    return None


def database_cpu_figure(
    before: float | None, after: float | None, messages: int, name: str = "database_cpu_ms_per_msg"
) -> dict[str, float]:
    """The database server's CPU milliseconds per message, for a result, when they could be read."""
    if before is None or after is None:
        return {}
    return {name: round(1000 * (after - before) / max(messages, 1), 2)}


async def join_or_kill(process: BaseProcess, timeout: float = JOIN_TIMEOUT) -> None:
    """Wait for a finished benchmark child to exit, bounded: a child stuck at exit is killed."""
    await asyncio.to_thread(process.join, timeout)
    if process.is_alive():
        process.kill()
        await asyncio.to_thread(process.join)


def load_average() -> str:
    """The machine's load when the figure was taken (/proc/loadavg's first three fields)."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"
