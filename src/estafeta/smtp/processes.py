"""More processes accepting on the relay's ports (`smtp.processes`), so that the front uses every core.

One Python process runs one thread of Python at a time, and accepting a message is CPU work (TLS,
parsing, DKIM signing). With `smtp.processes = N` the front process binds the submission ports with
SO_REUSEPORT and starts N - 1 children that bind the same ports; the kernel spreads new connections
across all of them. Each child builds its own `Core` and relay (no API, no delivery, no services) on the
same database, and answers 250 only once the message is committed, as the front does; delivery engines
find what a child queued at their next poll (`delivery.poll_interval`). Per-IP connection counts, login
lockouts and account rates are each process's own unless they are shared through Redis.
SQLite has one writer, so more than one accepting process needs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from estafeta.config import Settings
from estafeta.core import Core
from estafeta.smtp.server import SmtpPorts, SmtpRelay

log = logging.getLogger("estafeta.smtp")

START_TIMEOUT = 120.0
STOP_MARGIN = 5.0  # seconds a child gets beyond its grace to answer and exit


class RelayProcesses:
    """Starts and stops the extra accepting processes of one front process."""

    def __init__(self, settings: Settings, ports: SmtpPorts, count: int) -> None:
        # The children listen where the front already does (the ports it bound, even if configured as 0).
        smtp = settings.smtp.model_copy(
            update={"starttls_port": ports.starttls, "implicit_tls_port": ports.implicit_tls}
        )
        self.settings = settings.model_copy(update={"smtp": smtp})
        self.count = count
        self._children: list[tuple[BaseProcess, Connection]] = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._children if process.pid is not None]

    async def start(self) -> None:
        """Start every child; returns once all of them accept connections."""
        context = multiprocessing.get_context("spawn")
        try:
            for _ in range(self.count):
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=_child_main, args=(self.settings, theirs), name="estafeta-relay", daemon=False
                )
                process.start()
                theirs.close()
                self._children.append((process, ours))
            for process, control in self._children:
                ready = await asyncio.to_thread(control.poll, START_TIMEOUT)
                message = control.recv() if ready else ("error", "no answer")
                if message[0] != "ready":
                    raise RuntimeError(f"relay process {process.pid} failed to start: {message[1]}")
        except BaseException:
            await self.stop(grace=1.0)
            raise

    async def stop(self, grace: float) -> None:
        """Stop every child: each stops listening and lets messages under way get their reply."""
        for _, control in self._children:
            with contextlib.suppress(OSError):
                control.send(("stop", grace))
        for process, control in self._children:
            await asyncio.to_thread(process.join, grace + STOP_MARGIN)
            if process.is_alive():
                log.error("relay process %s did not stop in time; ending it", process.pid)
                process.kill()
                await asyncio.to_thread(process.join)
            control.close()
        self._children = []


def _child_main(settings: Settings, control: Connection) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the front decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_accept(settings, control))


async def _accept(settings: Settings, control: Connection) -> None:
    try:
        core = Core(settings)
        relay = SmtpRelay(settings, core.domains, core.accepter, core.smtp_credentials, core.limits)
        await relay.start()
    except Exception as error:
        control.send(("error", repr(error)))
        return
    control.send(("ready",))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    grace = 10.0
    loop.add_signal_handler(signal.SIGTERM, stopping.set)

    def on_control() -> None:
        nonlocal grace
        try:
            request = control.recv()
        except (EOFError, OSError):  # the front went away
            request = ("stop", grace)
        loop.remove_reader(control.fileno())
        grace = float(request[1])
        stopping.set()

    loop.add_reader(control.fileno(), on_control)
    await stopping.wait()
    await relay.stop(grace)
    core.close()
