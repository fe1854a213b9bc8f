"""The running platform: the servers and tasks around one `Core`, started and stopped together.

`estafeta serve`, `estafeta demo`, the benchmarks and the end-to-end tests all start the platform
through this class, so they exercise the same thing. Everything the servers do goes through `core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable

import uvicorn

from estafeta.api.app import create_app
from estafeta.api.metrics import metrics_app
from estafeta.bounces.inbound import InboundListener
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.delivery.processes import delivery_work
from estafeta.metrics import CommitWindow, CounterTotals
from estafeta.scheduler import Scheduler
from estafeta.smtp import SmtpPorts, SmtpRelay
from estafeta.supervisor import ChildKind, Inbox, Supervisor

log = logging.getLogger("estafeta")


class Platform:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        mail_due: Callable[[], None] | None = None,
        metrics_from: str | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        """`mail_due`: whom to tell that mail was queued here besides this process's delivery (a front
        child process tells the serve process, which wakes delivery); `metrics_from`: where a front child
        process reads the node's metrics (`Core`); `inbox`: where a front child process receives the relay
        connections the serve process hands it."""
        self.settings = settings
        self.mail_due = mail_due
        self.inbox = inbox
        self.core = Core(settings, clock=clock, wake_delivery=self.wake_delivery, metrics_from=metrics_from)
        core = self.core
        self.engine = core.delivery_engine()
        self.supervisor = Supervisor(core.metrics, mail_due=self.wake_delivery)
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
        self.supervisor.wake("delivery")
        if self.mail_due is not None:
            self.mail_due()

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api.host}:{self.api_port}"

    async def _serve(self, app: object, host: str, port: int, name: str) -> tuple[uvicorn.Server, int]:
        """Serve an ASGI app on host:port (0: any free port) in a task; returns once it accepts requests."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if name == "api" and self.settings.front.processes > 1:  # other front processes listen here too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")  # type: ignore[arg-type]
        server = uvicorn.Server(config)
        self._tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=name))
        while not server.started:
            await asyncio.sleep(0.01)
        return server, sock.getsockname()[1]

    async def start(
        self,
        *,
        api: bool = True,
        delivery: bool = True,
        smtp: bool = False,
        services: bool = True,
        children: bool = True,
    ) -> None:
        """Start the chosen parts in the running loop; returns once they accept work.

        `delivery` runs the delivery engine here, or in `settings.delivery.processes` child processes.
        `api` and `smtp` are the front: with `settings.front.processes` = N, N - 1 child processes serve
        them too (unless `children` is false: this is one of them), the API on the same port, the relay
        on connections this process accepts and hands them (`estafeta.smtp.server`).
        `services` are what a front process runs for the platform: the campaign runner, the inbound
        listener for bounces and complaints (when `settings.inbound.enabled`), webhooks, the Postmaster
        poller and the metrics endpoint; a delivery-only process, and front child processes, leave them
        out. The scheduler runs with either (its jobs run once a round across every node:
        `estafeta.scheduler`).
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
        front_children = children and (api or smtp) and self.settings.front.processes > 1
        metrics_from: str | None = None
        if services and metrics.enabled and metrics.port is not None:
            self._metrics_server, self.metrics_port = await self._serve(
                metrics_app(core), metrics.host, metrics.port, "metrics"
            )
        elif services and metrics.enabled and api and front_children:
            # /metrics on the API port may land on a front child: it answers with this process's figures
            # (the node's sums), read from a loopback listener of their own.
            self._metrics_server, self.metrics_port = await self._serve(
                metrics_app(core), "127.0.0.1", 0, "metrics"
            )
            metrics_from = f"http://127.0.0.1:{self.metrics_port}/metrics"
        if delivery and not self.settings.delivery.processes:
            self._tasks.append(asyncio.create_task(self.engine.run(), name="delivery"))
        if smtp:
            self.smtp_ports = await self.smtp.start(
                front=self.supervisor if front_children else None, inbox=self.inbox
            )
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
        # Last: whatever failed above (a port in use) has not left children running.
        kinds: list[ChildKind] = []
        if front_children:
            kinds.append(
                ChildKind(
                    "front",
                    functools.partial(front_work, api=api, metrics_from=metrics_from),
                    self._front_child_settings(smtp),
                    self.settings.front.processes - 1,
                    handoff=smtp,
                )
            )
        if delivery and self.settings.delivery.processes:
            delivery_settings = self.settings.delivery.model_copy(update={"processes": 0})
            kinds.append(
                ChildKind(
                    "delivery",
                    delivery_work,
                    self.settings.model_copy(update={"delivery": delivery_settings}),
                    self.settings.delivery.processes,
                )
            )
        if kinds:
            await self.supervisor.start(*kinds)

    def _front_child_settings(self, smtp: bool) -> Settings:
        """The settings of a front child: this process's ports (also when configured as 0), and the relay
        only if this process serves it."""
        update: dict[str, object] = {
            "api": self.settings.api.model_copy(update={"port": self.api_port or self.settings.api.port}),
            "smtp": self.settings.smtp.model_copy(
                update={
                    "enabled": smtp,
                    "starttls_port": self.smtp_ports.starttls if self.smtp_ports else 0,
                    "implicit_tls_port": self.smtp_ports.implicit_tls if self.smtp_ports else 0,
                }
            ),
        }
        return self.settings.model_copy(update=update)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking work, finish what is under way, release the rest; nothing accepted is lost."""
        core = self.core
        core.audience.runner.stop()
        await self.supervisor.stop(grace, "front")
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
        await self.supervisor.stop(grace)
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


class FrontWork:
    """What a front child process runs: the API and the relay on the serve process's ports (no delivery,
    no services); mail it queues wakes the serve process's delivery."""

    def __init__(
        self,
        settings: Settings,
        mail_due: Callable[[], None],
        inbox: Inbox | None,
        api: bool,
        metrics_from: str | None,
    ) -> None:
        self.platform = Platform(settings, mail_due=mail_due, metrics_from=metrics_from, inbox=inbox)
        self.api = api

    async def start(self) -> None:
        await self.platform.start(
            api=self.api,
            delivery=False,
            smtp=self.platform.settings.smtp.enabled,
            services=False,
            children=False,
        )

    def wake(self) -> None:
        """Nothing to do: this process does not deliver."""

    def report(self) -> tuple[CounterTotals, CommitWindow | None]:
        return self.platform.core.metrics.counter_totals(), None

    async def stop(self, grace: float) -> None:
        await self.platform.stop(grace)


def front_work(
    settings: Settings,
    mail_due: Callable[[], None],
    inbox: Inbox | None,
    *,
    api: bool = True,
    metrics_from: str | None = None,
) -> FrontWork:
    """The supervisor's factory for front child processes (`inbox`: relay connections handed over; `api`:
    serve the API too; `metrics_from`: the serve process's metrics listener, for /metrics on the API)."""
    return FrontWork(settings, mail_due, inbox, api, metrics_from)
