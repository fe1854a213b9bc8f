"""The running platform: the servers and tasks around one `Core`, started and stopped together.

`estafeta serve`, `estafeta demo`, the benchmarks and the end-to-end tests all start the platform
through this class, so they exercise the same thing. Everything the servers do goes through `core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from estafeta.api.app import create_app
from estafeta.api.metrics import metrics_app
from estafeta.bounces.inbound import InboundListener
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.delivery.processes import DeliveryProcesses
from estafeta.scheduler import Scheduler
from estafeta.smtp import SmtpPorts, SmtpRelay
from estafeta.smtp.processes import RelayProcesses

log = logging.getLogger("estafeta")


class Platform:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.core = Core(settings, clock=clock, wake_delivery=self.wake_delivery)
        core = self.core
        self.engine = core.delivery_engine()
        self.delivery_processes: DeliveryProcesses | None = None
        self.inbound = InboundListener(
            core.db,
            settings,
            core.clock,
            core.verp_secret,
            unsubscribe=core.audience.unsubscriber,
            after_complaint=core.reputation.after_complaint,
            dmarc=core.dmarc,
            abuse=core.abuse,
            limits=core.limits,
        )
        self.inbound_address: tuple[str, int] | None = None
        self.scheduler = Scheduler(core.jobs(), core.db, core.clock, core.owner, settings.scheduler.interval)
        self.smtp = SmtpRelay(settings, core.domains, core.accepter, core.smtp_credentials, core.limits)
        self.smtp_ports: SmtpPorts | None = None
        self.relay_processes: RelayProcesses | None = None
        self.app = create_app(core)
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: list[asyncio.Task[None]] = []  # loops that only end when cancelled
        self._webhooks_running = False
        self._metrics_server: uvicorn.Server | None = None
        self.api_port: int | None = None
        self.metrics_port: int | None = None

    def wake_delivery(self) -> None:
        """Mail became due (queued, released, resumed): deliver it now rather than at the next poll."""
        self.engine.notify()
        if self.delivery_processes is not None:
            self.delivery_processes.notify()

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api.host}:{self.api_port}"

    async def _serve(self, app: object, host: str, port: int, name: str) -> tuple[uvicorn.Server, int]:
        """Serve an ASGI app on host:port (0: any free port) in a task; returns once it accepts requests."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")  # type: ignore[arg-type]
        server = uvicorn.Server(config)
        self._tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=name))
        while not server.started:
            await asyncio.sleep(0.01)
        return server, sock.getsockname()[1]

    async def start(
        self, *, api: bool = True, delivery: bool = True, smtp: bool = False, services: bool = True
    ) -> None:
        """Start the chosen parts in the running loop; returns once they accept work.

        `delivery` runs the delivery engine here, or in `settings.delivery.processes` child processes.
        `services` are what a front process runs for the platform: the campaign runner, the inbound
        listener for bounces and complaints (when `settings.inbound.enabled`), webhooks, the Postmaster
        poller and the metrics endpoint; a delivery-only process leaves them out. The scheduler runs with
        either (its jobs run once a round across every node: `estafeta.scheduler`).
        The SMTP relay binds well-known ports (587, 465) unless configured otherwise, so it runs only when
        asked for: `estafeta serve` asks when `settings.smtp.enabled`.
        """
        core = self.core
        # Other nodes' setting changes (PostgreSQL): heard before this node serves anything.
        self._background.append(asyncio.create_task(core.changes.run(), name="changes"))
        if not core.db.is_sqlite:
            await asyncio.wait_for(core.changes.listening.wait(), 30)
        if api:
            self._server, self.api_port = await self._serve(
                self.app, self.settings.api.host, self.settings.api.port, "api"
            )
            core.urls.api = self.api_url
        metrics = self.settings.metrics
        if services and metrics.enabled and metrics.port is not None:
            self._metrics_server, self.metrics_port = await self._serve(
                metrics_app(core), metrics.host, metrics.port, "metrics"
            )
        if delivery and not self.settings.delivery.processes:
            self._tasks.append(asyncio.create_task(self.engine.run(), name="delivery"))
        if smtp:
            self.smtp_ports = await self.smtp.start()
            if self.settings.smtp.processes > 1:
                self.relay_processes = RelayProcesses(
                    self.settings, self.smtp_ports, self.settings.smtp.processes - 1
                )
                await self.relay_processes.start()
        if services:
            self._tasks.append(asyncio.create_task(core.audience.runner.run(), name="campaigns"))
            if self.settings.inbound.enabled:
                self.inbound_address = await self.inbound.start()
            if self.settings.webhooks.enabled:
                await core.webhook_dispatcher.start()
                self._webhooks_running = True
            if self.settings.postmaster.sources:
                self._background.append(asyncio.create_task(core.postmaster.run(), name="postmaster"))
        if services or delivery:  # on every node: each round runs on one of them
            self._background.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        if delivery and self.settings.delivery.processes:
            # Last: whatever failed above (a port in use) has not left children running.
            self.delivery_processes = DeliveryProcesses(
                self.settings, self.settings.delivery.processes, core.metrics
            )
            await self.delivery_processes.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking work, finish what is under way, release the rest; nothing accepted is lost."""
        core = self.core
        core.audience.runner.stop()
        if self.relay_processes is not None:
            await self.relay_processes.stop(grace)
            self.relay_processes = None
        if self.smtp_ports is not None:
            await self.smtp.stop(grace)
            self.smtp_ports = None
        if self.inbound_address is not None:
            await self.inbound.stop(grace)
            self.inbound_address = None
        if self._server is not None:
            self._server.should_exit = True
        if self._metrics_server is not None:
            self._metrics_server.should_exit = True
        await self.engine.stop(grace)
        if self.delivery_processes is not None:
            await self.delivery_processes.stop(grace)
            self.delivery_processes = None
        if self._webhooks_running:
            await core.webhook_dispatcher.stop(min(grace, 5.0))
            self._webhooks_running = False
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await core.aclose()
