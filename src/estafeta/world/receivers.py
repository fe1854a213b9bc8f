"""The MX servers' SMTP side: an aiosmtpd handler per provider and the shared record of what arrived.

Handlers run in the world's event loop; the `Mailroom` they write to is read (and reset) from other
threads by tests and benchmarks, so it keeps its counters and messages behind a lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from estafeta.clock import Clock
from estafeta.world.authentication import Authentication, MailDkim, dkim_result, dkimpy_verdicts, evaluate
from estafeta.world.ledger import Ledger
from estafeta.world.one_click import NO_ONE_CLICK, one_click_problem
from estafeta.world.providers import RATE_LIMITED, UNAUTHENTICATED, Fault, Provider, RateLimit
from estafeta.world.zone import WorldZone

DATA_SIZE_LIMIT = 50 * 1024 * 1024
DEFAULT_CAPACITY = 200_000
DEFAULT_TRICKLE = 0.5  # seconds between the bytes of a slow-loris reply
STORM_GREETING = "421 4.7.0 {host} Too many connections, try again later"
TLS_HANDSHAKE_FAILURE = b"\x15\x03\x03\x00\x02\x02\x28"  # a fatal TLS alert record: handshake_failure


@dataclass(frozen=True)
class Received:
    """One message a provider accepted, as it came off the wire."""

    provider: str
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    peer: str
    tls: bool
    dkim: str  # "pass": a valid signature aligned with From; "fail": signed, but no such one; "none"
    received_at: datetime
    helo: str = ""  # the name the client greeted with (EHLO/HELO)
    authentication: Authentication | None = None  # at providers that enforce DMARC: every verdict


@dataclass
class ProviderStats:
    """Postmaster-style counters; replies are counted once each, messages once at end of DATA."""

    connections: int = 0
    accepted: int = 0
    rejected_5xx: int = 0
    deferred_4xx: int = 0  # 4xx replies other than 421
    throttled_421: int = 0
    dkim_pass: int = 0
    dkim_fail: int = 0
    tls_sessions: int = 0
    # At providers that enforce DMARC: Mail::DKIM's verdicts per signature (dkimpy's are dkim_pass/fail
    # above), pyspf's results and DMARC's.
    mail_dkim_pass: int = 0
    mail_dkim_fail: int = 0
    mail_dkim_unsupported: int = 0
    spf_pass: int = 0
    spf_fail: int = 0  # any result but pass
    dmarc_pass: int = 0
    dmarc_fail: int = 0
    reports_sent: int = 0  # late bounces, complaints and automatic replies delivered to the platform


class Mailroom:
    """Accepted messages (newest last, oldest dropped past `capacity`), counters and scripted replies."""

    def __init__(self, domains: Iterable[str], capacity: int = DEFAULT_CAPACITY) -> None:
        self._lock = threading.Lock()
        self._domains = tuple(domains)
        self._stats = {domain: ProviderStats() for domain in self._domains}
        self._received: deque[Received] = deque(maxlen=capacity)
        self._scripts: dict[str, deque[str]] = {}
        self.ledger = Ledger(capacity)

    def script(self, recipient: str, replies: list[str]) -> None:
        with self._lock:
            self._scripts[recipient.lower()] = deque(replies)

    def next_scripted(self, recipient: str) -> str | None:
        """Pop the next scripted reply for `recipient`, if any are left."""
        if not self._scripts:
            return None
        with self._lock:
            replies = self._scripts.get(recipient.lower())
            if not replies:
                return None
            reply = replies.popleft()
            if not replies:
                del self._scripts[recipient.lower()]
            return reply

    def connection(self, domain: str) -> None:
        with self._lock:
            self._stats[domain].connections += 1

    def tls_session(self, domain: str) -> None:
        with self._lock:
            self._stats[domain].tls_sessions += 1

    def refusal(self, domain: str, reply: str) -> str:
        """Count a 4xx/5xx reply and hand it back."""
        with self._lock:
            stats = self._stats[domain]
            if reply.startswith("421"):
                stats.throttled_421 += 1
            elif reply.startswith("4"):
                stats.deferred_4xx += 1
            else:
                stats.rejected_5xx += 1
        return reply

    def dkim_result(self, domain: str, result: str) -> None:
        if result == "none":
            return
        with self._lock:
            if result == "pass":
                self._stats[domain].dkim_pass += 1
            else:
                self._stats[domain].dkim_fail += 1

    def authenticated(self, domain: str, verdict: Authentication) -> None:
        with self._lock:
            stats = self._stats[domain]
            for signature in verdict.verdicts("mail-dkim"):
                if signature.result == "pass":
                    stats.mail_dkim_pass += 1
                elif "unsupported" in signature.detail:
                    stats.mail_dkim_unsupported += 1
                else:
                    stats.mail_dkim_fail += 1
            if verdict.spf == "pass":
                stats.spf_pass += 1
            else:
                stats.spf_fail += 1
            if verdict.dmarc == "pass":
                stats.dmarc_pass += 1
            elif verdict.dmarc == "fail":
                stats.dmarc_fail += 1

    def report_sent(self, domain: str) -> None:
        with self._lock:
            self._stats[domain].reports_sent += 1

    def accept(self, message: Received) -> None:
        with self._lock:
            self._stats[message.provider].accepted += 1
            self._received.append(message)

    def received(self, domain: str | None = None) -> list[Received]:
        with self._lock:
            if domain is None:
                return list(self._received)
            return [message for message in self._received if message.provider == domain]

    def stats(self) -> dict[str, ProviderStats]:
        with self._lock:
            return {domain: dataclasses.replace(stats) for domain, stats in self._stats.items()}

    def reset(self) -> None:
        self.ledger.reset()
        with self._lock:
            self._received.clear()
            self._scripts.clear()
            self._stats = {domain: ProviderStats() for domain in self._domains}


def verify_dkim(message: bytes, zone: WorldZone) -> str:
    """Return "pass" if a DKIM signature verifies and its d= is the From domain or a parent of it (the
    alignment DMARC and Gmail's sender rules ask for), "fail" if signed otherwise, "none" if unsigned.

    Keys are read from the zone directly rather than through the DNS socket, which this same event loop
    serves: a blocking lookup here would wait on itself.
    """
    if not _signed(message):
        return "none"  # the common unsigned case, without dkimpy's full parse
    return dkim_result(*dkimpy_verdicts(message, zone))


def _signed(message: bytes) -> bool:
    header_end = message.find(b"\r\n\r\n")
    return b"dkim-signature" in message[: header_end if header_end >= 0 else None].lower()


class ProviderSMTP(SMTP):
    """aiosmtpd's SMTP session, closing the connection after a 421 as RFC 5321 3.8 describes, keeping
    the ledger of when it was open and when its current transaction began, and misbehaving as its
    provider's fault says while the provider is faulty."""

    def __init__(self, handler: ProviderHandler, ledger: Ledger, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = handler.sessions
        self._handler = handler
        self.ledger = ledger
        self.serial = 0
        self.began = 0.0  # monotonic time of the current transaction's MAIL FROM
        self._greeted = False

    @property
    def fault(self) -> Fault | None:
        return self._handler.provider.fault if self._handler.faulty else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.serial:  # not again when STARTTLS wraps the transport
            self.serial = self.ledger.opened(self._handler.provider.domain)
        self._sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        self.ledger.closed(self.serial)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        fault = self.fault
        if fault == "421-storm" and not self._greeted:
            status = STORM_GREETING.format(host=self.hostname)  # type: ignore[assignment]
        self._greeted = True
        if fault == "slow-loris":
            await self._trickle(status.encode() if isinstance(status, str) else status)
        else:
            await super().push(status)
        code = status[:3]
        if (code == "421" or code == b"421") and self.transport is not None:
            self.transport.close()

    async def _trickle(self, reply: bytes) -> None:
        data = reply + b"\r\n"
        for i in range(len(data)):
            if self.transport is None or self.transport.is_closing():
                return
            self._writer.write(data[i : i + 1])
            await asyncio.sleep(self._handler.trickle)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self.fault == "reset-in-data" and self.envelope is not None and self.envelope.rcpt_tos:
            await super().push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readline()  # type: ignore[attr-defined]  # the message has begun
            self.reset()
            return
        await super().smtp_DATA(arg)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.fault == "broken-tls" and not arg:
            await super().push("220 2.0.0 Ready to start TLS")
            self._writer.write(TLS_HANDSHAKE_FAILURE)  # where the server's hello should be
            if self.transport is not None:
                self.transport.close()
            return
        await super().smtp_STARTTLS(arg)

    def reset(self) -> None:
        """End the connection with a TCP reset, as a crashed or overloaded receiver does."""
        if not isinstance(self.transport, asyncio.Transport):
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def drop(self) -> None:
        """Abort the connection (the world is stopping; no TLS close_notify exchange to wait for)."""
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()


class ProviderHandler:
    """aiosmtpd hooks for one provider: scripted replies first, then the provider's own behaviour."""

    def __init__(
        self,
        provider: Provider,
        mailroom: Mailroom,
        zone: WorldZone,
        clock: Clock,
        tls_context: ssl.SSLContext | None,
        rate_limit: RateLimit | None,
        after_accept: Callable[[Provider, Received], None] | None = None,
        trickle: float = DEFAULT_TRICKLE,
        mail_dkim: MailDkim | None = None,
    ) -> None:
        """`after_accept` is told of every message accepted (the world's reporter); `trickle` is the pause
        between the bytes of a slow-loris reply; `mail_dkim` is the second DKIM verifier of providers that
        enforce DMARC."""
        self.provider = provider
        self.faulty = provider.fault is not None
        self.trickle = trickle
        self.sessions: set[ProviderSMTP] = set()
        self._domain = provider.domain
        self._mailroom = mailroom
        self._zone = zone
        self._clock = clock
        self._tls_context = tls_context
        self._recipients = provider.recipients()
        self._rate_limit = rate_limit
        self._queue_ids = itertools.count(1)
        self._after_accept = after_accept
        self._mail_dkim = mail_dkim

    def protocol(self) -> ProviderSMTP:
        """Protocol factory for `loop.create_server`: one SMTP session per connection."""
        self._mailroom.connection(self._domain)
        return ProviderSMTP(
            self,
            self._mailroom.ledger,
            hostname=self.provider.mx_host,
            ident="ESMTP",
            tls_context=self._tls_context,
            enable_SMTPUTF8=True,
            data_size_limit=DATA_SIZE_LIMIT,
            loop=asyncio.get_running_loop(),
        )

    def reset(self) -> None:
        self.faulty = self.provider.fault is not None
        self._recipients.reset()
        if self._rate_limit is not None:
            self._rate_limit.reset()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """The big providers offer PIPELINING (RFC 2920); aiosmtpd answers pipelined commands in order."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self._mailroom.tls_session(self._domain)
        return True

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if isinstance(server, ProviderSMTP):
            server.began = time.monotonic()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._mailroom.next_scripted(address)
        if reply is None or reply.startswith("2"):
            reply = self._recipients.check(session.peer[0], address)
        if reply is not None:
            return self._mailroom.refusal(self._domain, reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if isinstance(server, ProviderSMTP) and server.fault == "hang-after-data":
            await asyncio.Future()  # never answers; ends when the sender gives up and hangs up
        peer = session.peer[0]
        if self._rate_limit is not None and not self._rate_limit.allow(peer):
            return self._mailroom.refusal(self._domain, RATE_LIMITED)
        data = envelope.original_content or b""
        authentication = None
        if self.provider.enforces_dmarc:
            authentication = await self._authenticate(data, peer, envelope.mail_from or "", session)
            self._mailroom.authenticated(self._domain, authentication)
            result = authentication.dkim
        else:
            result = verify_dkim(data, self._zone)
        self._mailroom.dkim_result(self._domain, result)
        if self.provider.requires_dkim and result != "pass":
            return self._mailroom.refusal(self._domain, UNAUTHENTICATED)
        refusal = authentication.refusal() if authentication is not None else None
        if refusal is not None:
            return self._mailroom.refusal(self._domain, refusal)
        if self.provider.requires_one_click and one_click_problem(data):
            return self._mailroom.refusal(self._domain, NO_ONE_CLICK)
        received = Received(
            provider=self._domain,
            mail_from=envelope.mail_from or "",
            rcpt_to=list(envelope.rcpt_tos),
            data=data,
            peer=peer,
            tls=session.ssl is not None,
            dkim=result,
            received_at=self._clock.now(),
            helo=session.host_name or "",
            authentication=authentication,
        )
        self._mailroom.accept(received)
        if isinstance(server, ProviderSMTP):
            server.ledger.acknowledged(self._domain, server.serial, received.rcpt_to, server.began)
        if self._after_accept is not None:
            self._after_accept(self.provider, received)
        return f"250 2.0.0 OK queued as {next(self._queue_ids):x}"

    async def _authenticate(self, data: bytes, peer: str, mail_from: str, session: Session) -> Authentication:
        """Both DKIM verifiers, SPF and DMARC, as a receiver that enforces DMARC checks a message."""
        second = []
        if self._mail_dkim is not None and _signed(data):
            second = await self._mail_dkim.verify(data)
        return evaluate(self._zone, data, peer, mail_from, session.host_name or "", second)
