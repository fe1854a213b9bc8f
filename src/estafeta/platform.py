"""The running platform: one object that wires settings, database, accept path, delivery and the API.

`estafeta serve`, `estafeta demo`, the benchmarks and the end-to-end tests all start the platform
through this class, so they exercise the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from urllib.parse import urlsplit

import uvicorn

from estafeta.accept import Accepter
from estafeta.audience.campaigns import CampaignRunner, Campaigns
from estafeta.audience.consent import Consent
from estafeta.audience.links import Links
from estafeta.audience.tokens import Tokens
from estafeta.audience.unsubscribe import Unsubscriber
from estafeta.auth import AdminKeyVerifier, ApiKeyVerifier
from estafeta.bounces.inbound import InboundListener
from estafeta.clock import Clock, SystemClock
from estafeta.config import Settings
from estafeta.delivery.engine import DeliveryEngine
from estafeta.delivery.mx import MxResolver, make_resolver
from estafeta.delivery.processes import DeliveryProcesses
from estafeta.metrics import Metrics
from estafeta.notices import Notices
from estafeta.postmaster import PostmasterPoller
from estafeta.reputation import Reputation
from estafeta.retention import Retention
from estafeta.scheduler import Scheduler
from estafeta.smtp import SmtpCredentialVerifier, SmtpPorts, SmtpRelay
from estafeta.store import accounts as account_store
from estafeta.store.db import Database
from estafeta.tracking import Tracker
from estafeta.webhooks import Webhooks

log = logging.getLogger("estafeta")


class Platform:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.database_url)
        self.db.migrate()
        secret = self.db.call(account_store.set_state_if_absent, "verp_secret", secrets.token_hex(32))
        self.verp_secret = bytes.fromhex(secret)
        tracking_secret = self.db.call(
            account_store.set_state_if_absent, "tracking_secret", secrets.token_hex(32)
        )
        self.metrics = Metrics()
        self.tracker = Tracker(
            self.db,
            settings.tracking,
            self.clock,
            bytes.fromhex(tracking_secret),
            lambda: self.api_url if self.api_port is not None else None,
        )
        self.webhooks = Webhooks(self.db, settings.webhooks, self.clock, metrics=self.metrics)
        self.postmaster = PostmasterPoller(self.db, settings.postmaster, self.clock)
        self.resolver = MxResolver(make_resolver(settings.dns_servers))
        self.engine = DeliveryEngine(
            self.db, settings, self.clock, self.resolver, self.verp_secret, metrics=self.metrics
        )
        self.delivery_processes: DeliveryProcesses | None = None
        self.accepter = Accepter(
            self.db,
            settings,
            self.clock,
            self.wake_delivery,
            tracker=self.tracker,
            metrics=self.metrics,
            own_hosts=self._own_hosts,
        )
        self.reputation = Reputation(self.db, settings, self.clock)
        self.engine.queue.after_finish = self.reputation.after_outcomes
        audience_secret = self.db.call(
            account_store.set_state_if_absent, "audience_secret", secrets.token_hex(32)
        )
        self.tokens = Tokens(bytes.fromhex(audience_secret), self.clock)
        self.links = Links(self.tokens, lambda: self.public_url, settings.return_path_domain)
        self.consent = Consent(self.db, settings, self.clock, self.accepter, self.links)
        self.unsubscriber = Unsubscriber(self.db, self.clock, self.tokens)
        self.campaign_runner = CampaignRunner(
            self.db, settings, self.clock, self.accepter, self.links, self.consent, self.engine.owner
        )
        self.campaigns = Campaigns(self.db, self.clock, self.campaign_runner.wake)
        self.api_keys = ApiKeyVerifier(self.db)
        self.admin_keys = AdminKeyVerifier(self.db)
        self.inbound = InboundListener(
            self.db, settings, self.clock, self.verp_secret, unsubscribe=self.unsubscriber
        )
        self.inbound.after_complaint = self.reputation.after_complaint
        self.inbound_address: tuple[str, int] | None = None
        self.notices = Notices(self.db, settings, self.clock, self.accepter)
        self.retention = Retention(self.db, settings.retention, self.clock)
        self.scheduler = Scheduler(
            {
                "warmup-reviews": self.reputation.warmup_reviews,
                "campaign-resumption": self.reputation.resume_campaigns,
                "notices": self.notices.send,
                "retention": self.retention.prune,
            }
        )
        self.smtp_credentials = SmtpCredentialVerifier(self.db, self.clock)
        self.smtp = SmtpRelay(settings, self.db, self.accepter, self.smtp_credentials, self.clock)
        self.smtp_ports: SmtpPorts | None = None
        from estafeta.api.app import create_app  # the API's routers import this module

        self.app = create_app(self)
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

    def _own_hosts(self) -> set[str]:
        """Hosts of the platform's own links (public pages, tracking, API): link checks trust them."""
        urls = [self.settings.public_url, self.settings.tracking.base_url]
        if self.api_port is not None:
            urls.append(self.api_url)
        return {urlsplit(url).hostname or "" for url in urls if url} - {""}

    @property
    def public_url(self) -> str:
        """Base of the links in list mail (unsubscribe, preferences, confirmation): `settings.public_url`,
        else the API's own URL (the sandbox)."""
        return self.settings.public_url or self.api_url

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
        `services` are what one front process runs for the platform: the campaign runner, the inbound
        listener for bounces and complaints (when `settings.inbound.enabled`), webhooks, the scheduler,
        the Postmaster poller and the metrics endpoint; a delivery-only process leaves them out.
        The SMTP relay binds well-known ports (587, 465) unless configured otherwise, so it runs only when
        asked for: `estafeta serve` asks when `settings.smtp.enabled`.
        """
        if api:
            self._server, self.api_port = await self._serve(
                self.app, self.settings.api.host, self.settings.api.port, "api"
            )
        metrics = self.settings.metrics
        if services and metrics.enabled and metrics.port is not None:
            from estafeta.api.metrics import metrics_app

            self._metrics_server, self.metrics_port = await self._serve(
                metrics_app(self), metrics.host, metrics.port, "metrics"
            )
        if delivery and not self.settings.delivery.processes:
            self._tasks.append(asyncio.create_task(self.engine.run(), name="delivery"))
        if smtp:
            self.smtp_ports = await self.smtp.start()
        if services:
            self._tasks.append(asyncio.create_task(self.campaign_runner.run(), name="campaigns"))
            if self.settings.inbound.enabled:
                self.inbound_address = await self.inbound.start()
            if self.settings.webhooks.enabled:
                await self.webhooks.start()
                self._webhooks_running = True
            self._background.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
            if self.settings.postmaster.sources:
                self._background.append(asyncio.create_task(self.postmaster.run(), name="postmaster"))
        if delivery and self.settings.delivery.processes:
            # Last: whatever failed above (a port in use) has not left children running.
            self.delivery_processes = DeliveryProcesses(
                self.settings, self.settings.delivery.processes, self.metrics
            )
            await self.delivery_processes.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking work, finish what is under way, release the rest; nothing accepted is lost."""
        self.campaign_runner.stop()
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
            await self.webhooks.stop(min(grace, 5.0))
            self._webhooks_running = False
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.db.close()
