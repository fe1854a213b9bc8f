"""Running a `World` beside other code: in a background thread, or in a child process.

A thread suits tests that want the world's accessors directly; a child process suits benchmarks and the
demo, where the receiving side should not share the sender's interpreter (and so its core).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from estafeta import loop as event_loop
from estafeta.world.receivers import ProviderStats
from estafeta.world.world import World

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class WorldThread:
    """Runs a `World` in its own event loop on a daemon thread; `start`/`stop` block until done."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> World:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run, args=(loop,), name="estafeta-world", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self.world.start(), loop).result(START_TIMEOUT)
        except BaseException:
            self._halt()
            raise
        return self.world

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.world.stop(), self._loop).result(STOP_TIMEOUT)
        finally:
            self._halt()

    def _halt(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT)
        self._loop, self._thread = None, None

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> World:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class WorldProcess:
    """Handle on a world running in a child process; talk to it only through these methods."""

    def __init__(self, process: multiprocessing.process.BaseProcess, connection: Connection) -> None:
        self._process = process
        self._connection = connection
        self._lock = threading.Lock()
        message: tuple[Any, ...] = ("error", f"no answer in {START_TIMEOUT:.0f}s")
        if connection.poll(START_TIMEOUT):
            try:
                message = connection.recv()
            except EOFError:
                process.join(STOP_TIMEOUT)
                message = ("error", f"the process exited with code {process.exitcode}")
        if message[0] != "ready":
            self.stop()
            raise RuntimeError(f"world process failed to start: {message[1]}")
        self.dns_address: tuple[str, int] = message[1]
        self.smtp_port: int = message[2]
        self.https_port: int = message[3]
        self.ca_file: Path = message[4]

    def stats(self) -> dict[str, ProviderStats]:
        """The child world's `stats()`."""
        with self._lock:
            self._connection.send("stats")
            stats: dict[str, ProviderStats] = self._connection.recv()
            return stats

    def report_to(self, host: str, port: int) -> None:
        """The child world's `report_to()`: where late bounces, complaints and auto-replies go."""
        with self._lock:
            self._connection.send(("report_to", host, port))
            self._connection.recv()

    def send_dmarc_reports(self) -> int:
        """The child world's `send_dmarc_reports()`."""
        with self._lock:
            self._connection.send("dmarc_reports")
            sent: int = self._connection.recv()
            return sent

    def stop(self) -> None:
        """Ask the child to stop cleanly; terminate it if it does not exit in time."""
        with self._lock:
            if self._process.is_alive():
                with contextlib.suppress(OSError):  # the child may already be gone
                    self._connection.send("stop")
                self._process.join(STOP_TIMEOUT)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
            self._connection.close()


def start_world_process(
    extra_zone: str = "", gmail_rate_limit: int = 200, dns_port: int = 0, smtp_port: int = 0
) -> WorldProcess:
    """Start a `World` in a spawned child process; returns once it is serving (or raises)."""
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    kwargs = {
        "extra_zone": extra_zone,
        "gmail_rate_limit": gmail_rate_limit,
        "dns_port": dns_port,
        "smtp_port": smtp_port,
    }
    process = context.Process(
        target=_child_main, args=(child_end, kwargs), name="estafeta-world", daemon=True
    )
    process.start()
    child_end.close()
    return WorldProcess(process, parent_end)


def _child_main(connection: Connection, kwargs: dict[str, Any]) -> None:
    # The parent decides when the world stops; Ctrl-C in a terminal reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    event_loop.run(_serve_parent(connection, kwargs))


async def _serve_parent(connection: Connection, kwargs: dict[str, Any]) -> None:
    """Serve the world until the parent says "stop" or goes away (its end of the pipe closes)."""
    try:
        world = World(**kwargs)
        await world.start()
    except Exception as error:
        connection.send(("error", repr(error)))
        return
    connection.send(("ready", world.dns_address, world.smtp_port, world.https_port, world.ca_file))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_request() -> None:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            request = "stop"
        if request == "stats":
            connection.send(world.stats())
        elif request == "dmarc_reports":
            connection.send(world.send_dmarc_reports())
        elif isinstance(request, tuple) and request[0] == "report_to":
            world.report_to(request[1], request[2])
            connection.send("ok")
        else:
            stopping.set()

    loop.add_reader(connection.fileno(), on_request)
    try:
        await stopping.wait()
    finally:
        loop.remove_reader(connection.fileno())
        await world.stop()
