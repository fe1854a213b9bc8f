"""`World`: the DNS server and every provider's MX server, run together in one event loop."""

from __future__ import annotations

import asyncio
import errno
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from estafeta.clock import Clock, SystemClock
from estafeta.tls import CertificateAuthority
from estafeta.world.authentication import MailDkim
from estafeta.world.dmarc_reports import DmarcBook
from estafeta.world.dns_server import DnsServer
from estafeta.world.ledger import LedgerView
from estafeta.world.mta_sts import (
    REPORT_MAILBOX,
    PolicyServer,
    mx_contexts,
    parse_tls_report,
    parse_tls_report_mail,
)
from estafeta.world.postmaster import PostmasterBook, PostmasterServer
from estafeta.world.providers import PROVIDERS, Provider, RateLimit, require_loopback, zone_records
from estafeta.world.receivers import (
    DEFAULT_CAPACITY,
    DEFAULT_TRICKLE,
    Mailroom,
    ProviderHandler,
    ProviderStats,
    Received,
)
from estafeta.world.reports import Reporter
from estafeta.world.unsubscribers import Unsubscribe, Unsubscribers
from estafeta.world.web import WebProxy
from estafeta.world.zone import WorldZone

_PORT_ATTEMPTS = 8
_DRAIN_ROUNDS = 100


class World:
    """The simulated internet: DNS for `*.test` plus one MX server per provider on its own 127.0.0.x.

    All servers are bound in the event loop that calls `start()`; the accessors (`zone`, `received`,
    `script`, `stats`, `reset`) are thread-safe, so tests may use them from outside that loop.
    """

    def __init__(
        self,
        host_dns: str = "127.0.0.1",
        dns_port: int = 0,
        smtp_port: int = 0,
        extra_zone: str = "",
        gmail_rate_limit: int = 200,
        *,
        clock: Clock | None = None,
        providers: Sequence[Provider] = PROVIDERS,
        capacity: int = DEFAULT_CAPACITY,
        trickle: float = DEFAULT_TRICKLE,
    ) -> None:
        """`extra_zone` is zone-file text relative to `test.`; `gmail_rate_limit` is messages per second
        per client IP at rate-limited providers (0 disables it); ports 0 pick free ones; `trickle` is the
        pause between the bytes of the slow-loris provider's replies."""
        self.providers = tuple(providers)
        clock = clock or SystemClock()
        forward, reverse = zone_records(self.providers)
        require_loopback(host_dns)
        self.zone = WorldZone(forward + extra_zone + "\n", reverse, nameserver_address=host_dns)
        self._mailroom = Mailroom((provider.domain for provider in self.providers), capacity)
        self._dns = DnsServer(self.zone, host_dns, dns_port)
        self._reporter = Reporter(self._mailroom.report_sent)
        self._unsubscribers = Unsubscribers(self._reporter)
        self._postmaster = PostmasterBook(self.zone)
        self._dmarc = DmarcBook(self.zone)
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._postmaster_server = PostmasterServer(
            self._postmaster, [provider.domain for provider in self.providers], host_dns
        )
        self.web = WebProxy(host_dns)
        authority = CertificateAuthority()
        self.ca_pem = authority.certificate_pem
        """The certificate of the world's authority: trust it (`mta_sts.ca_file`) to verify its MX hosts."""
        self._ca_dir: tempfile.TemporaryDirectory[str] | None = None
        self.policies = PolicyServer(self.zone, self.providers, authority, host_dns)
        tls_contexts = mx_contexts(self.providers, authority)
        self._mail_dkim: MailDkim | None = None
        if any(provider.enforces_dmarc for provider in self.providers):
            self._mail_dkim = MailDkim()
        self._handlers = [
            ProviderHandler(
                provider,
                self._mailroom,
                self.zone,
                clock,
                tls_contexts[provider.domain],
                RateLimit(gmail_rate_limit, clock) if provider.rate_limited and gmail_rate_limit else None,
                self._after_accept,
                trickle,
                self._mail_dkim,
            )
            for provider in self.providers
        ]
        self._requested_smtp_port = smtp_port
        self._servers: list[asyncio.Server] = []
        self.smtp_port = 0

    @property
    def dns_address(self) -> tuple[str, int]:
        """(host, port) where the DNS server answers over UDP and TCP."""
        return self._dns.address

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._dns.start()
        try:
            if self._mail_dkim is not None:
                await self._mail_dkim.start(self._dns.address)
            await self._bind_mx_servers()
            await self._postmaster_server.start()
            await self.web.start()
            await self.policies.start()
            self.policies.publish_all()
        except BaseException:
            await self._dns.stop()
            if self._mail_dkim is not None:
                await self._mail_dkim.stop()
            raise

    def _after_accept(self, provider: Provider, received: Received) -> None:
        self._reporter.after_accept(provider, received)
        self._postmaster.after_accept(provider, received)
        self._dmarc.after_accept(provider, received)
        self._unsubscribers.after_accept(provider, received)

    @property
    def postmaster_url(self) -> str:
        """Base URL of the providers' Postmaster Tools: `{url}/{provider}/domains/{domain}/stats`."""
        return self._postmaster_server.url

    def postmaster_sources(self) -> list[dict[str, str]]:
        """`settings.postmaster.sources` for a platform that should poll every provider."""
        return [
            {"provider": provider.domain, "url": f"{self.postmaster_url}/{provider.domain}"}
            for provider in self.providers
            if provider.listening
        ]

    def postmaster(self, provider: str, domain: str) -> list[dict[str, object]]:
        """What `provider` reports for the sending domain, day by day."""
        return self._postmaster.figures(provider, domain)

    async def _bind_mx_servers(self) -> None:
        """Bind every listening provider on one shared port; with port 0, the first bind picks it and a
        conflict on another address (or a listener where a provider must be down) means another try."""
        loop = asyncio.get_running_loop()
        listening = [handler for handler in self._handlers if handler.provider.listening]
        silent = [handler.provider.address for handler in self._handlers if not handler.provider.listening]
        for attempt in range(_PORT_ATTEMPTS):
            port = self._requested_smtp_port
            servers: list[asyncio.Server] = []
            try:
                for handler in listening:
                    server = await loop.create_server(handler.protocol, handler.provider.address, port)
                    servers.append(server)
                    port = port or server.sockets[0].getsockname()[1]
                for address in silent:
                    _ensure_nothing_listens(address, port)
            except OSError as error:
                for server in servers:
                    server.close()
                retry = error.errno == errno.EADDRINUSE and not self._requested_smtp_port
                if not retry or attempt == _PORT_ATTEMPTS - 1:
                    raise
                continue
            self._servers, self.smtp_port = servers, port
            return

    async def stop(self) -> None:
        """Close every server and drop open connections."""
        await self._reporter.stop()
        await self._unsubscribers.stop()
        await self._postmaster_server.stop()
        await self.web.stop()
        await self.policies.stop()
        if self._ca_dir is not None:
            self._ca_dir.cleanup()
            self._ca_dir = None
        for server in self._servers:
            server.close()
        for handler in self._handlers:
            for session in list(handler.sessions):
                session.drop()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        if self._mail_dkim is not None:
            await self._mail_dkim.stop()
        await self._dns.stop()
        # Let dropped sessions run connection_lost (which ends their tasks) before the loop may close.
        for _ in range(_DRAIN_ROUNDS):
            if not any(handler.sessions for handler in self._handlers):
                break
            await asyncio.sleep(0)

    async def serve_forever(self) -> None:
        """Start if needed, serve until cancelled, then stop cleanly (the `estafeta world` command)."""
        if not self._servers:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def describe(self) -> list[tuple[str, str]]:
        """(domain, "MX host (address): behaviour") for each provider, for listings such as the CLI's."""
        return [
            (provider.domain, f"{provider.mx_host} ({provider.address}): {provider.behaviour}")
            for provider in self.providers
        ]

    def received(self, domain: str | None = None) -> list[Received]:
        """Messages accepted (by the provider `domain`, or by all), newest last."""
        return self._mailroom.received(domain)

    def script(self, recipient: str, replies: list[str]) -> None:
        """Override RCPT replies for `recipient`: each attempt pops the next reply; a 2xx reply (e.g.
        "250") means the provider's own behaviour, as does running out. A 421 closes the connection."""
        self._mailroom.script(recipient, replies)

    def heal(self, domain: str) -> None:
        """Make the faulty provider `domain` behave (accept mail as others do) until `reset` (thread-safe)."""
        for handler in self._handlers:
            if handler.provider.domain == domain:
                handler.faulty = False
                return
        raise KeyError(domain)

    def report_to(self, host: str, port: int) -> None:
        """Send late bounces, complaints and automatic replies to the platform's inbound listener at
        `host:port` (until this is called, providers report nothing)."""
        self._reporter.report_to(require_loopback(host), port)

    def send_dmarc_reports(self) -> int:
        """Have the reporting providers (gmail.test, yahoo.test) mail their DMARC aggregate reports of the
        mail accepted since their last ones to the `rua` of each domain (through `report_to`); returns
        how many reports were handed to the reporter (thread-safe)."""
        assert self._loop is not None, "the world is not running"
        providers = {provider.domain: provider for provider in self.providers}
        reports = self._dmarc.take_reports(providers, self._clock.now())
        for provider, rua, message in reports:
            sender = f"noreply-dmarc-support@{provider}"
            self._loop.call_soon_threadsafe(self._reporter.send, provider, sender, rua, message)
        return len(reports)

    def unsubscribe_for(self, addresses: Iterable[str]) -> None:
        """Have these recipients press "unsubscribe" when list mail reaches them (besides `unsub*` ones):
        a one-click POST at gmail.test, a mail to the mailto: address at yahoo.test (thread-safe)."""
        self._unsubscribers.choose(addresses)

    def unsubscribes(self) -> list[Unsubscribe]:
        """The unsubscribes providers performed, oldest first (thread-safe)."""
        return self._unsubscribers.done()

    @property
    def ca_file(self) -> Path:
        """`ca_pem` in a file (kept while the world runs), for `mta_sts.ca_file`."""
        if self._ca_dir is None:
            self._ca_dir = tempfile.TemporaryDirectory(prefix="estafeta-world-")
            Path(self._ca_dir.name, "ca.pem").write_bytes(self.ca_pem)
        return Path(self._ca_dir.name, "ca.pem")

    @property
    def https_port(self) -> int:
        """The port of the MTA-STS policy hosts (`mta_sts.policy_port` of a sandbox platform)."""
        return self.policies.port

    def tls_reports(self) -> list[dict[str, object]]:
        """TLS-RPT reports received, by HTTPS POST and by mail to tlsrpt@reports.test, as parsedmarc reads
        them (oldest first within each way)."""
        reports = [parse_tls_report(body) for body in self.policies.posted()]
        for message in self.received("reports.test"):
            if REPORT_MAILBOX in message.rcpt_to:
                reports.append(parse_tls_report_mail(message.data))
        return reports

    def ledger(self) -> LedgerView:
        """Every session and every acknowledged DATA so far, with when (thread-safe): what crash tests
        compare the sender's kills with."""
        return self._mailroom.ledger.view()

    def acknowledged(self) -> int:
        """How many DATA the providers have answered with 250 so far (thread-safe, cheap)."""
        return len(self._mailroom.ledger)

    def stats(self) -> dict[str, ProviderStats]:
        """A snapshot of every provider's counters, keyed by provider domain."""
        return self._mailroom.stats()

    def reset(self) -> None:
        """Forget received mail, scripts, counters, what providers remember (greylist, rate windows),
        where reports go, who unsubscribes and scripted redirects; healed providers are faulty again."""
        self._reporter.reset()
        self._unsubscribers.reset()
        self._postmaster.reset()
        self._dmarc.reset()
        self.web.reset()
        self.policies.reset()
        self._mailroom.reset()
        for handler in self._handlers:
            handler.reset()


def _ensure_nothing_listens(address: str, port: int) -> None:
    """Raise EADDRINUSE if something listens on `address:port`, where connections must be refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # on Linux, only a listener conflicts
        probe.bind((address, port))
