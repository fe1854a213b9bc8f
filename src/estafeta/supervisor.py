"""The child processes of `estafeta serve`: front processes and delivery processes, under one supervisor.

A Python process runs one thread of Python at a time, so on a machine with several cores the platform
accepts and delivers faster with processes of its own: `front.processes - 1` children serve the API and
the relay with the serve process, and `delivery.processes` children run delivery engines; all share the
database. The API's port is bound by every front process (SO_REUSEPORT: the kernel spreads its short
requests over them). Relay sessions are few and long-lived, which the kernel's hash spreads badly, so the
serve process alone listens on the relay ports and hands each connection to the process holding the fewest
(`hand_off`): over a third channel, a Unix socket per front child, it sends the connection's descriptor
(SCM_RIGHTS) tagged with its listener, and the child sends back a byte when a handed connection ends.

Each child has two pipes. The wake pipe carries single bytes both ways and never blocks (a full pipe
already holds a wake-up): the serve process wakes delivery children when mail is queued, and a front
child tells the serve process it queued mail. On the control pipe the child says when it is ready and
sends its counters and commit window every `REPORT_INTERVAL` (the serve process's `/metrics` adds them
up), and the serve process says when to stop and with how much grace. A child stops cleanly (work under
way finishes) when asked, on SIGTERM, or when the serve process goes away. A child that dies, or fails
to start, is started again after a pause that grows while children keep dying young; what it held is
retried once its leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from estafeta import loop as event_loop
from estafeta.config import Settings
from estafeta.metrics import CommitWindow, CounterTotals, Metrics
from estafeta.waits import wait_set

log = logging.getLogger("estafeta.supervisor")

START_TIMEOUT = 120.0
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0
REPORT_INTERVAL = 0.25
STABLE_SECONDS = 60.0  # a child that ran this long before dying is replaced after the shortest pause
STOP_MARGIN = 5.0  # seconds a child gets beyond its grace to finish its work and exit


class ChildWork(Protocol):
    """What a child process runs: started once, woken when mail is due, reported, stopped once."""

    async def start(self) -> None: ...

    def wake(self) -> None: ...

    def report(self) -> tuple[CounterTotals, CommitWindow | None]: ...

    async def stop(self, grace: float) -> None: ...


class Inbox:
    """A child's end of its hand-off channel: connections the serve process hands it, each with a tag;
    `done` tells the serve process that one of them ended."""

    def __init__(self, channel: socket.socket) -> None:
        channel.setblocking(False)
        self._channel = channel
        self._listening = False

    def listen(self, take: Callable[[socket.socket, bytes], None]) -> None:
        """Call `take(connection, tag)` for every connection handed over from now on."""
        asyncio.get_running_loop().add_reader(self._channel.fileno(), self._receive, take)
        self._listening = True

    def _receive(self, take: Callable[[socket.socket, bytes], None]) -> None:
        for _ in range(64):  # then let the loop run other work; the reader fires again
            try:
                tag, fds, _flags, _address = socket.recv_fds(self._channel, 1, 1)
            except BlockingIOError:
                return
            except OSError:
                tag, fds = b"", []
            if not tag:  # the serve process went away (the control pipe stops this child)
                self.stop()
                return
            if not fds:  # not received (out of descriptors): it ended here
                self.done()
            for fd in fds:
                take(socket.socket(fileno=fd), tag)

    def done(self) -> None:
        """A handed connection ended."""
        with contextlib.suppress(OSError):  # the serve process is gone: nobody counts any more
            self._channel.send(b"d")

    def stop(self) -> None:
        """Take no more connections."""
        if self._listening:
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
            self._listening = False


# Builds a child's work from its settings, a function telling the serve process that mail is due, and the
# child's inbox (for kinds with `handoff`, else None). A module-level function: children are spawned, so
# it is passed by name.
WorkFactory = Callable[[Settings, Callable[[], None], Inbox | None], ChildWork]


@dataclass
class Child:
    kind: str
    process: BaseProcess
    control: Connection
    wake: Connection  # our end of the wake pipe, non-blocking
    ready: asyncio.Future[None]
    started: float  # loop time
    reported: CounterTotals = field(default_factory=dict)  # counter totals already added
    window: CommitWindow = field(default_factory=CommitWindow)  # as last reported
    handoff: socket.socket | None = None  # our end of the hand-off channel (kinds with `handoff`)
    handed: int = 0  # connections handed to it that have not ended yet


@dataclass(frozen=True)
class ChildKind:
    """Children to run: `count` processes, each running the work `factory` builds from `settings`; with
    `handoff`, each gets an `Inbox` for connections the serve process hands it (`Supervisor.hand_off`)."""

    name: str
    factory: WorkFactory
    settings: Settings
    count: int
    handoff: bool = False


class Supervisor:
    """Starts, watches (restarting children that die), wakes and stops the children of one serve process."""

    def __init__(self, metrics: Metrics, mail_due: Callable[[], None]) -> None:
        """`mail_due` is called when a child queued mail (the serve process wakes delivery)."""
        self.metrics = metrics
        self.mail_due = mail_due
        self._kinds: dict[str, ChildKind] = {}
        self._children: list[Child] = []
        self._stopping: set[str] = set()
        self._restarts: set[asyncio.Task[None]] = set()
        self._next_delay = RESTART_DELAY  # grows while children keep dying young
        self._retired = CommitWindow()  # what children that exited had committed
        metrics.commit_windows.append(self._window)

    def children(self, kind: str) -> list[Child]:
        return [child for child in self._children if child.kind == kind]

    def _window(self) -> CommitWindow:
        return CommitWindow.total([self._retired, *(child.window for child in self._children)])

    async def start(self, *kinds: ChildKind) -> None:
        """Start the children of every kind at once (each takes seconds to import and start, so one after
        the other would add up); returns once all of them run, or stops them all and raises why one could
        not."""
        for kind in kinds:
            self._kinds[kind.name] = kind
            self._stopping.discard(kind.name)
        try:
            children = [self._spawn(kind.name) for kind in kinds for _ in range(kind.count)]
            await asyncio.gather(*(asyncio.wait_for(c.ready, START_TIMEOUT) for c in children))
        except BaseException:
            for kind in kinds:
                await self.stop(1.0, kind.name)
            raise

    def wake(self, kind: str) -> None:
        """Mail became due: wake every child of a kind (cheap, and never waits for a child)."""
        for child in self._children:
            if child.kind == kind:
                with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending already
                    os.write(child.wake.fileno(), b"w")

    def least_handed(self, kind: str) -> Child | None:
        """The running child of a kind (with `handoff`) holding the fewest handed connections."""
        running = [
            child
            for child in self._children
            if child.kind == kind
            and kind not in self._stopping  # what is still handed to it would be closed unanswered
            and child.handoff is not None
            and child.ready.done()
            and not child.ready.cancelled()
            and child.ready.exception() is None
        ]
        return min(running, key=lambda child: child.handed, default=None)

    def hand_off(self, child: Child, connection: socket.socket, tag: bytes) -> None:
        """Send `connection` to `child` with a one-byte `tag`; the caller then closes its own copy. Raises
        OSError when it cannot be sent (the child is gone, or its channel is full)."""
        assert child.handoff is not None and len(tag) == 1
        socket.send_fds(child.handoff, [tag], [connection.fileno()])
        child.handed += 1

    def _spawn(self, kind: str) -> Child:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        wake_ours, wake_theirs = context.Pipe()
        spec = self._kinds[kind]
        handoff, inbox = (
            socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) if spec.handoff else (None, None)
        )
        process = context.Process(
            target=_child_main,
            args=(spec.factory, spec.settings, theirs, wake_theirs, inbox),
            name=f"estafeta-{kind}",
            daemon=False,
        )
        try:
            process.start()
        except BaseException:
            ours.close()
            wake_ours.close()
            if handoff is not None:
                handoff.close()
            raise
        finally:  # the child has its own copies of these (or there is no child)
            theirs.close()
            wake_theirs.close()
            if inbox is not None:
                inbox.close()
        os.set_blocking(wake_ours.fileno(), False)
        loop = asyncio.get_running_loop()
        child = Child(kind, process, ours, wake_ours, loop.create_future(), loop.time(), handoff=handoff)
        self._children.append(child)
        loop.add_reader(ours.fileno(), self._on_message, child)
        loop.add_reader(wake_ours.fileno(), self._on_wake, child)
        if handoff is not None:
            handoff.setblocking(False)
            loop.add_reader(handoff.fileno(), self._on_done, child)
        return child

    def _on_done(self, child: Child) -> None:
        """The child says handed connections ended, a byte each."""
        assert child.handoff is not None
        try:
            ended = child.handoff.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            ended = b""
        if ended:
            child.handed -= len(ended)
        else:  # closed: the control pipe says why
            asyncio.get_running_loop().remove_reader(child.handoff.fileno())

    def _on_wake(self, child: Child) -> None:
        try:
            woken = os.read(child.wake.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            woken = b""
        if woken:
            self.mail_due()
        else:  # closed: the control pipe says why
            asyncio.get_running_loop().remove_reader(child.wake.fileno())

    def _on_message(self, child: Child) -> None:
        try:
            message: tuple[Any, ...] = child.control.recv()
        except (EOFError, OSError):
            self._gone(child)
            return
        if message[0] == "ready" and not child.ready.done():
            child.ready.set_result(None)
        elif message[0] == "error" and not child.ready.done():
            child.ready.set_exception(RuntimeError(f"{child.kind} process failed to start: {message[1]}"))
        elif message[0] == "report":
            totals: CounterTotals = message[1]
            self.metrics.add_counts(
                {key: total - child.reported.get(key, 0.0) for key, total in totals.items()}
            )
            child.reported = totals
            if message[2] is not None:
                child.window = message[2]

    def _gone(self, child: Child) -> None:
        """The child closed its control pipe: it exited (asked to, or not)."""
        if child not in self._children:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.control.fileno())
        loop.remove_reader(child.wake.fileno())
        child.control.close()
        child.wake.close()
        if child.handoff is not None:
            loop.remove_reader(child.handoff.fileno())
            child.handoff.close()
        self._children.remove(child)
        # Its counts stay counted; what it had not committed is no longer pending anywhere.
        self._retired = CommitWindow.total([self._retired, replace(child.window, uncommitted=0)])
        stopping = child.kind in self._stopping
        ready = child.ready
        was_running = ready.done() and not ready.cancelled() and ready.exception() is None
        if not ready.done():  # whoever waits for it to start decides what comes next
            if stopping:
                ready.cancel()
            else:
                ready.set_exception(RuntimeError(f"{child.kind} process exited while starting"))
        if was_running and not stopping:
            if loop.time() - child.started >= STABLE_SECONDS:
                self._next_delay = RESTART_DELAY
            delay, self._next_delay = self._next_delay, min(self._next_delay * 2, MAX_RESTART_DELAY)
            log.error(
                "%s process %s exited unexpectedly; starting another in %.0fs",
                child.kind,
                child.process.pid,
                delay,
            )
            task = asyncio.create_task(self._restart(child.kind, delay))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _restart(self, kind: str, delay: float) -> None:
        """Start a replacement after `delay`, trying again with growing pauses until one runs (or its kind
        stops)."""
        while kind not in self._stopping:
            await asyncio.sleep(delay)
            if kind in self._stopping:
                return
            delay = min(delay * 2, MAX_RESTART_DELAY)
            try:
                child = self._spawn(kind)
            except OSError:
                log.exception("a %s process could not be started; trying again in %.0fs", kind, delay)
                continue
            try:
                await asyncio.wait_for(child.ready, START_TIMEOUT)
                return
            except Exception:
                log.exception("a %s process could not be started; trying again in %.0fs", kind, delay)
                if child.process.is_alive():
                    child.process.kill()
                    await asyncio.to_thread(child.process.join)
                self._gone(child)

    async def stop(self, grace: float = 10.0, kind: str | None = None) -> None:
        """Ask every child (of a kind) to stop within `grace` seconds (work under way finishes); end
        stragglers."""
        kinds = set(self._kinds) if kind is None else {kind}
        self._stopping |= kinds
        restarts = list(self._restarts)  # a restart ends once its kind stops; cancel them all the same
        for task in restarts:
            task.cancel()
        await asyncio.gather(*restarts, return_exceptions=True)
        children = [child for child in self._children if child.kind in kinds]
        for child in children:
            with contextlib.suppress(OSError):
                child.control.send(("stop", grace))
        await asyncio.gather(
            *(asyncio.to_thread(child.process.join, grace + STOP_MARGIN) for child in children),
            return_exceptions=True,
        )
        for child in children:
            if child.process.is_alive():
                log.error("%s process %s did not stop in time; ending it", child.kind, child.process.pid)
                child.process.kill()
                await asyncio.to_thread(child.process.join)
            # Read what it sent last (its final counts) before letting go of the pipes.
            while child in self._children and child.control.poll():
                self._on_message(child)
            self._gone(child)


def _child_main(
    factory: WorkFactory,
    settings: Settings,
    control: Connection,
    wake: Connection,
    handoff: socket.socket | None,
) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the serve process decides when children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    event_loop.run(_run_child(factory, settings, control, wake, handoff))


async def _run_child(
    factory: WorkFactory,
    settings: Settings,
    control: Connection,
    wake: Connection,
    handoff: socket.socket | None,
) -> None:
    os.set_blocking(wake.fileno(), False)

    def mail_due() -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending already
            os.write(wake.fileno(), b"w")

    try:
        work = factory(settings, mail_due, None if handoff is None else Inbox(handoff))
        await work.start()
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
            work.wake()
        else:  # the serve process went away
            loop.remove_reader(wake.fileno())
            stopping.set()

    def on_control() -> None:
        nonlocal grace
        try:
            request = control.recv()
        except (EOFError, OSError):  # the serve process went away
            request = ("stop", grace)
        loop.remove_reader(control.fileno())  # nothing but "stop" comes this way
        if isinstance(request, tuple) and request[0] == "stop":
            grace = float(request[1])
        stopping.set()

    def report() -> None:
        with contextlib.suppress(OSError):
            control.send(("report", *work.report()))

    loop.add_reader(wake.fileno(), on_wake)
    loop.add_reader(control.fileno(), on_control)
    try:
        while not stopping.is_set():
            await wait_set(stopping, REPORT_INTERVAL)
            report()
    finally:
        loop.remove_reader(wake.fileno())
        loop.remove_reader(control.fileno())
        await work.stop(grace)
        report()
        control.close()
        wake.close()
        if handoff is not None:
            handoff.close()
