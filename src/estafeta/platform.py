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

import uvicorn

from estafeta.accept import Accepter
from estafeta.auth import ApiKeyVerifier
from estafeta.clock import Clock, SystemClock
from estafeta.config import Settings
from estafeta.delivery.engine import DeliveryEngine
from estafeta.delivery.mx import MxResolver, make_resolver
from estafeta.smtp import SmtpCredentialVerifier, SmtpPorts, SmtpRelay
from estafeta.store import accounts as account_store
from estafeta.store.db import Database

log = logging.getLogger("estafeta")


class Platform:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.database_url)
        self.db.migrate()
        secret = self.db.call(account_store.set_state_if_absent, "verp_secret", secrets.token_hex(32))
        self.verp_secret = bytes.fromhex(secret)
        self.resolver = MxResolver(make_resolver(settings.dns_servers))
        self.engine = DeliveryEngine(self.db, settings, self.clock, self.resolver, self.verp_secret)
        self.accepter = Accepter(self.db, settings, self.clock, self.engine.notify)
        self.api_keys = ApiKeyVerifier(self.db)
        self.smtp_credentials = SmtpCredentialVerifier(self.db, self.clock)
        self.smtp = SmtpRelay(settings, self.db, self.accepter, self.smtp_credentials, self.clock)
        self.smtp_ports: SmtpPorts | None = None
        from estafeta.api.app import create_app  # the API's routers import this module

        self.app = create_app(self)
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.api_port: int | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api.host}:{self.api_port}"

    async def start(self, *, api: bool = True, delivery: bool = True, smtp: bool = False) -> None:
        """Start the chosen parts in the running loop; returns once they accept work.

        The SMTP relay binds well-known ports (587, 465) unless configured otherwise, so it runs only when
        asked for: `estafeta serve` asks when `settings.smtp.enabled`.
        """
        if api:
            sock = socket.socket(socket.AF_INET6 if ":" in self.settings.api.host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.settings.api.host, self.settings.api.port))
            self.api_port = sock.getsockname()[1]
            config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
            self._server = uvicorn.Server(config)
            self._tasks.append(asyncio.create_task(self._server.serve(sockets=[sock]), name="api"))
            while not self._server.started:
                await asyncio.sleep(0.01)
        if delivery:
            self._tasks.append(asyncio.create_task(self.engine.run(), name="delivery"))
        if smtp:
            self.smtp_ports = await self.smtp.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking work, finish what is under way, release the rest; nothing accepted is lost."""
        if self.smtp_ports is not None:
            await self.smtp.stop(grace)
            self.smtp_ports = None
        if self._server is not None:
            self._server.should_exit = True
        await self.engine.stop(grace)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.db.close()
