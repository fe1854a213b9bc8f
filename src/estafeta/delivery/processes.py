"""Delivery in child processes beside the front process (`delivery.processes`).

A Python process runs one thread of Python at a time, so on a machine with several cores the platform
accepts and delivers faster when delivery has processes of its own: the front process (API, SMTP relay,
services) accepts, each child runs a delivery engine on the same database, and leases keep them from ever
taking the same queue entry.

The front wakes the children through a pipe as soon as mail is queued (they need not wait for their next
poll); the children send their attempt counts back, so the front's `/metrics` covers them. A child stops
cleanly (attempts under way finish, the rest is released) when the front asks, when it receives SIGTERM,
or when the front goes away. A child that dies is started again; what it held is retried once its leases
expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from estafeta.config import Settings
from estafeta.metrics import OUTCOMES, Metrics
from estafeta.waits import wait_set

log = logging.getLogger("estafeta.delivery")

START_TIMEOUT = 60.0
RESTART_DELAY = 1.0
REPORT_INTERVAL = 1.0


@dataclass
class _Child:
    process: BaseProcess
    connection: Connection
    ready: asyncio.Future[None]
    reported: dict[str, float] = field(default_factory=dict)  # attempt totals already counted


class DeliveryProcesses:
    """Starts, wakes, supervises and stops the delivery children of one front process."""

    def __init__(self, settings: Settings, count: int, metrics: Metrics) -> None:
        # The children run delivery themselves: they must not start children of their own.
        delivery = settings.delivery.model_copy(update={"processes": 0})
        self.settings = settings.model_copy(update={"delivery": delivery})
        self.count = count
        self.metrics = metrics
        self._children: list[_Child] = []
        self._stopping = False
        self._wake_scheduled = False
        self._restarts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start every child; returns once all of them deliver (or raises why one could not start)."""
        children = [self._spawn() for _ in range(self.count)]
        try:
            await asyncio.gather(*(asyncio.wait_for(c.ready, START_TIMEOUT) for c in children))
        except BaseException:
            await self.stop(grace=1.0)
            raise

    def notify(self) -> None:
        """Mail became due: wake every child once per turn of the event loop, however often called."""
        if not self._wake_scheduled and self._children:
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._wake_scheduled = False
        for child in self._children:
            with contextlib.suppress(OSError):  # a child that died is noticed by its reader
                child.connection.send("wake")

    def _spawn(self) -> _Child:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_child_main, args=(self.settings, theirs), name="estafeta-delivery", daemon=False
        )
        process.start()
        theirs.close()
        loop = asyncio.get_running_loop()
        child = _Child(process, ours, loop.create_future())
        self._children.append(child)
        loop.add_reader(ours.fileno(), self._on_message, child)
        return child

    def _on_message(self, child: _Child) -> None:
        try:
            message: tuple[Any, ...] = child.connection.recv()
        except (EOFError, OSError):
            self._gone(child)
            return
        if message[0] == "ready" and not child.ready.done():
            child.ready.set_result(None)
        elif message[0] == "error" and not child.ready.done():
            child.ready.set_exception(RuntimeError(f"delivery process failed to start: {message[1]}"))
        elif message[0] == "attempts":
            for outcome, total in message[1].items():
                counted = child.reported.get(outcome, 0.0)
                if total > counted:
                    self.metrics.delivery_attempts.labels(outcome).inc(total - counted)
                    child.reported[outcome] = total

    def _gone(self, child: _Child) -> None:
        """The child closed its end: it exited (asked to, or not)."""
        asyncio.get_running_loop().remove_reader(child.connection.fileno())
        child.connection.close()
        self._children.remove(child)
        if not child.ready.done():
            child.ready.set_exception(RuntimeError("delivery process exited while starting"))
            return
        if not self._stopping:
            log.error("delivery process %s exited unexpectedly; starting another", child.process.pid)
            task = asyncio.create_task(self._restart())
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _restart(self) -> None:
        await asyncio.sleep(RESTART_DELAY)
        if self._stopping:
            return
        try:
            await asyncio.wait_for(self._spawn().ready, START_TIMEOUT)
        except Exception:
            log.exception("a delivery process could not be started again")

    async def stop(self, grace: float = 10.0) -> None:
        """Ask every child to stop; wait for them (their attempts under way finish), then end stragglers."""
        self._stopping = True
        for task in self._restarts:
            task.cancel()
        children = list(self._children)
        for child in children:
            with contextlib.suppress(OSError):
                child.connection.send("stop")
        await asyncio.gather(
            *(asyncio.to_thread(child.process.join, grace + 5.0) for child in children),
            return_exceptions=True,
        )
        for child in children:
            if child.process.is_alive():
                log.error("delivery process %s did not stop in time; terminating it", child.process.pid)
                child.process.kill()
                await asyncio.to_thread(child.process.join)
            if child in self._children:
                # Read what it sent last (its final attempt counts) before letting go of the pipe.
                while child in self._children and child.connection.poll():
                    self._on_message(child)
                if child in self._children:
                    self._gone(child)


def _child_main(settings: Settings, connection: Connection) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the front decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_deliver(settings, connection))


async def _deliver(settings: Settings, connection: Connection) -> None:
    from estafeta.platform import Platform  # the platform module imports this one

    try:
        platform = Platform(settings)
        await platform.start(api=False, delivery=True, services=False)
    except Exception as error:
        connection.send(("error", repr(error)))
        return
    connection.send(("ready",))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)

    def on_message() -> None:
        try:
            request = connection.recv()
        except (EOFError, OSError):  # the front went away
            request = "stop"
        if request == "wake":
            platform.engine.notify()
        else:
            loop.remove_reader(connection.fileno())  # a closed pipe stays readable: stop listening
            stopping.set()

    def report() -> None:
        totals = {
            outcome: platform.metrics.registry.get_sample_value(
                "estafeta_delivery_attempts_total", {"outcome": outcome}
            )
            or 0.0
            for outcome in OUTCOMES
        }
        with contextlib.suppress(OSError):
            connection.send(("attempts", totals))

    loop.add_reader(connection.fileno(), on_message)
    try:
        while not stopping.is_set():
            await wait_set(stopping, REPORT_INTERVAL)
            report()
    finally:
        loop.remove_reader(connection.fileno())
        await platform.stop()
        report()
        connection.close()
