"""Delivery in child processes beside the front process (`delivery.processes`).

A Python process runs one thread of Python at a time, so on a machine with several cores the platform
accepts and delivers faster when delivery has processes of its own: the front process (API, SMTP relay,
services) accepts, each child runs a delivery engine on the same database, and leases keep them from ever
taking the same queue entry.

Each child has two pipes. On the wake pipe the front writes one byte when mail is queued (so the child
need not wait for its next poll); the write never blocks, and a full pipe already holds a wake-up. On the
control pipe the child says when it is ready and sends its attempt counts and its commit window (the
front's `/metrics` covers them), and the front says when to stop and with how much grace. A child stops
cleanly (attempts under way finish, the rest is released) when asked, on SIGTERM, or when the front goes
away. A child that dies, or fails to start, is started again with growing pauses; what it held is retried
once its leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from estafeta.config import Settings
from estafeta.core import Core
from estafeta.metrics import OUTCOMES, CommitWindow, Metrics
from estafeta.waits import wait_set

log = logging.getLogger("estafeta.delivery")

START_TIMEOUT = 60.0
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0
REPORT_INTERVAL = 0.25
STABLE_SECONDS = 60.0  # a child that ran this long before dying is replaced after the shortest pause
STOP_MARGIN = 5.0  # seconds a child gets beyond its grace to flush its results and exit


@dataclass
class _Child:
    process: BaseProcess
    control: Connection
    wake: int  # the write end of the wake pipe, non-blocking
    ready: asyncio.Future[None]
    started: float  # loop time
    reported: dict[str, float] = field(default_factory=dict)  # attempt totals already counted
    window: CommitWindow = field(default_factory=CommitWindow)  # as last reported


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
        self._restarts: set[asyncio.Task[None]] = set()
        self._next_delay = RESTART_DELAY  # grows while children keep dying young
        self._retired = CommitWindow()  # what children that exited had committed
        metrics.commit_windows.append(self._window)

    def _window(self) -> CommitWindow:
        return CommitWindow.total([self._retired, *(child.window for child in self._children)])

    async def start(self) -> None:
        """Start every child; returns once all of them deliver (or raises why one could not start)."""
        children = [self._spawn() for _ in range(self.count)]
        try:
            await asyncio.gather(*(asyncio.wait_for(c.ready, START_TIMEOUT) for c in children))
        except BaseException:
            await self.stop(grace=1.0)
            raise

    def notify(self) -> None:
        """Mail became due: wake every child (cheap, and never waits for a child)."""
        for child in self._children:
            with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending already
                os.write(child.wake, b"w")

    def _spawn(self) -> _Child:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        wake_reader, wake_writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main,
            args=(self.settings, theirs, wake_reader),
            name="estafeta-delivery",
            daemon=False,
        )
        try:
            process.start()
            wake = os.dup(wake_writer.fileno())
        except BaseException:
            ours.close()
            raise
        finally:  # the child has its own copies of these (or there is no child)
            theirs.close()
            wake_reader.close()
            wake_writer.close()
        os.set_blocking(wake, False)
        loop = asyncio.get_running_loop()
        child = _Child(process, ours, wake, loop.create_future(), loop.time())
        self._children.append(child)
        loop.add_reader(ours.fileno(), self._on_message, child)
        return child

    def _on_message(self, child: _Child) -> None:
        try:
            message: tuple[Any, ...] = child.control.recv()
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
            child.window = message[2]

    def _gone(self, child: _Child) -> None:
        """The child closed its control pipe: it exited (asked to, or not)."""
        if child not in self._children:
            return
        asyncio.get_running_loop().remove_reader(child.control.fileno())
        child.control.close()
        os.close(child.wake)
        self._children.remove(child)
        # Its histogram stays counted; what it had not committed is no longer pending anywhere.
        self._retired = CommitWindow.total([self._retired, replace(child.window, uncommitted=0)])
        ready = child.ready
        was_running = ready.done() and not ready.cancelled() and ready.exception() is None
        if not ready.done():  # whoever waits for it to start decides what comes next
            if self._stopping:
                ready.cancel()
            else:
                ready.set_exception(RuntimeError("delivery process exited while starting"))
        if was_running and not self._stopping:
            if asyncio.get_running_loop().time() - child.started >= STABLE_SECONDS:
                self._next_delay = RESTART_DELAY
            delay, self._next_delay = self._next_delay, min(self._next_delay * 2, MAX_RESTART_DELAY)
            log.error(
                "delivery process %s exited unexpectedly; starting another in %.0fs", child.process.pid, delay
            )
            task = asyncio.create_task(self._restart(delay))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _restart(self, delay: float) -> None:
        """Start a replacement after `delay`, trying again with growing pauses until one runs (or the front
        stops)."""
        while not self._stopping:
            await asyncio.sleep(delay)
            if self._stopping:
                return
            delay = min(delay * 2, MAX_RESTART_DELAY)
            try:
                child = self._spawn()
            except OSError:
                log.exception("a delivery process could not be started; trying again in %.0fs", delay)
                continue
            try:
                await asyncio.wait_for(child.ready, START_TIMEOUT)
                return
            except Exception:
                log.exception("a delivery process could not be started; trying again in %.0fs", delay)
                if child.process.is_alive():
                    child.process.kill()
                    await asyncio.to_thread(child.process.join)
                self._gone(child)

    async def stop(self, grace: float = 10.0) -> None:
        """Ask every child to stop within `grace` seconds (attempts under way finish); end stragglers."""
        self._stopping = True
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        children = list(self._children)
        for child in children:
            with contextlib.suppress(OSError):
                child.control.send(("stop", grace))
        await asyncio.gather(
            *(asyncio.to_thread(child.process.join, grace + STOP_MARGIN) for child in children),
            return_exceptions=True,
        )
        for child in children:
            if child.process.is_alive():
                log.error("delivery process %s did not stop in time; ending it", child.process.pid)
                child.process.kill()
                await asyncio.to_thread(child.process.join)
            # Read what it sent last (its final attempt counts) before letting go of the pipes.
            while child in self._children and child.control.poll():
                self._on_message(child)
            self._gone(child)


def _child_main(settings: Settings, control: Connection, wake: Connection) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the front decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_deliver(settings, control, wake))


async def _deliver(settings: Settings, control: Connection, wake: Connection) -> None:
    try:
        core = Core(settings)
        engine = core.delivery_engine()
        listening = asyncio.create_task(core.changes.run(), name="changes")
        running = asyncio.create_task(engine.run(), name="delivery")
    except Exception as error:
        control.send(("error", repr(error)))
        return
    control.send(("ready",))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    grace = 10.0
    loop.add_signal_handler(signal.SIGTERM, stopping.set)

    def on_wake() -> None:
        try:
            woken = os.read(wake.fileno(), 4096)
        except BlockingIOError:
            return
        if woken:
            engine.notify()
        else:  # the front went away
            loop.remove_reader(wake.fileno())
            stopping.set()

    def on_control() -> None:
        nonlocal grace
        try:
            request = control.recv()
        except (EOFError, OSError):  # the front went away
            request = ("stop", grace)
        loop.remove_reader(control.fileno())  # nothing but "stop" comes this way
        if isinstance(request, tuple) and request[0] == "stop":
            grace = float(request[1])
        stopping.set()

    def report() -> None:
        totals = {
            outcome: core.metrics.registry.get_sample_value(
                "estafeta_delivery_attempts_total", {"outcome": outcome}
            )
            or 0.0
            for outcome in OUTCOMES
        }
        with contextlib.suppress(OSError):
            control.send(("attempts", totals, engine.window.snapshot()))

    os.set_blocking(wake.fileno(), False)
    loop.add_reader(wake.fileno(), on_wake)
    loop.add_reader(control.fileno(), on_control)
    try:
        while not stopping.is_set():
            await wait_set(stopping, REPORT_INTERVAL)
            report()
    finally:
        loop.remove_reader(wake.fileno())
        loop.remove_reader(control.fileno())
        await engine.stop(grace)
        await running
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await core.aclose()
        report()
        control.close()
        wake.close()
