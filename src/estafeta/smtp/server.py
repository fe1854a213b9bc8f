"""The submission relay: aiosmtpd on a STARTTLS port and an implicit-TLS port, for mail clients and apps.

AUTH (PLAIN or LOGIN, only over TLS) is required before MAIL; the sender's domain must belong to the
account that logged in; and DATA is answered 250 only after `Accepter.accept_raw` has committed the message
to the same queue the HTTP API fills, so policy, DKIM signing and events are the API's.

With front child processes, the serve process alone listens, and serves each connection itself or hands it
to the front child holding the fewest (`estafeta.supervisor`): sessions are long-lived and few, so each
process gets its share however many there are.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email import policy
from email.parser import HeaderParser
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException, syntax

from estafeta.accept import Accepter, AcceptError
from estafeta.compose import Address, AddressError, parse_address
from estafeta.compose.headers import header_cache
from estafeta.config import Settings, SmtpSettings
from estafeta.domains import Domains
from estafeta.limits import Limits, LimitsUnavailable
from estafeta.smtp.credentials import SmtpCredentials
from estafeta.smtp.data import ChunkedData
from estafeta.smtp.limits import ConnectionLimiter, LoginFailureLimiter
from estafeta.tls import server_context, write_self_signed
from estafeta.waits import wait_set

if TYPE_CHECKING:
    from estafeta.supervisor import Inbox, Supervisor

log = logging.getLogger("estafeta.smtp")

TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections from your address, try again later\r\n"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down, try again later\r\n"
TOO_MANY_FAILURES = "454 4.7.0 Too many failed logins from your address; try again later"
USER_LOCKED = "454 4.7.0 Too many failed logins for this username; try again later"
NO_PROGRESS = "421 4.7.0 Too many commands without a message, closing connection"
IDLE = b"421 4.4.2 Idle for too long, closing connection\r\n"
TEMPORARY_FAILURE = "451 4.3.0 Message not queued because of a temporary error, try again later"
LIMITS_UNAVAILABLE = "451 4.3.0 Sending limits cannot be checked right now, try again later"
LOGIN_CHECKS_UNAVAILABLE = "454 4.3.0 Logins cannot be checked right now, try again later"
MAX_REPLY_TEXT = 400
_DRAIN_ROUNDS = 100
# A MAIL FROM or RCPT TO path as nearly every client writes it, <dot-atom@domain>, then its parameters: read
# exactly as aiosmtpd's parser reads it (which the tests compare), at a fraction of the cost.
_PLAIN_PATH = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
    r"[ \t]*([^(]*)",
    re.DOTALL,
)
_STARTTLS, _IMPLICIT_TLS = b"s", b"t"  # which listener a handed connection came from
_ACCEPTS_PER_WAKE = 64
_TLS_DETAILS = ("sslcontext", "peercert", "cipher", "compression", "ssl_object")  # `session.ssl`

# aiosmtpd's fixed replies that carry no enhanced status code (RFC 3463), and what the relay says instead.
_ENHANCED_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "554 Command refused due to lack of security": "554 5.7.0 Command refused due to lack of security",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO first",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "503 Already authenticated": "503 5.5.1 Already authenticated",
}


@dataclass(frozen=True)
class SmtpPorts:
    starttls: int
    implicit_tls: int


@dataclass(frozen=True)
class RelayLogin:
    """What a successful AUTH leaves on the session (`Session.auth_data`)."""

    account_id: int
    username: str


def reply_line(line: str) -> str:
    """A whole reply line as sent: aiosmtpd quotes some of what the client sent (an unknown command), which
    must not carry a line break or control character into the reply, nor make it longer than the 512
    octets RFC 5321 allows (with CRLF)."""
    if line.isascii() and line.isprintable() and len(line) <= 510:
        return line
    return line[:4] + reply_text(line[4:])  # the code and its separator, then at most 400 characters


def reply_text(text: str) -> str:
    """Text fit for one reply line: no line breaks or control characters, ASCII, bounded length."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat.encode("ascii", "backslashreplace").decode("ascii")[:MAX_REPLY_TEXT]


def _header_section(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end == -1 else raw[: end + 2]


def _fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of a header section as (lower-case name, bytes as they stand, folded lines included)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line)
        else:
            fields.append((line.partition(b":")[0].strip().lower(), line))
    return fields


def strip_bcc(raw: bytes) -> bytes:
    """Remove Bcc fields (with their folded lines) from the header section; all else stays byte for byte.

    Desktop clients may leave Bcc in what they submit; the envelope already carries those recipients, and
    the header would show every recipient who they are.
    """
    header = _header_section(raw)
    if b"bcc" not in header.lower():
        return raw
    kept = b"".join(text for name, text in _fields(header) if name != b"bcc")
    return kept + raw[len(header) :]


def author_domains(raw: bytes) -> list[str]:
    """Domains (A-labels) of the mailboxes in From; empty when From is missing or unreadable, which the
    accept path then refuses with a precise reason."""
    from_fields = tuple(text for name, text in _fields(_header_section(raw)) if name == b"from")
    return list(_domains_in(from_fields)) if from_fields else []


@header_cache
def _domains_in(from_fields: tuple[bytes, ...]) -> tuple[str, ...]:
    """Parsing address headers is slow and senders repeat their From, hence the cache."""
    header = b"".join(from_fields).decode("utf-8", "surrogateescape")  # RFC 6532: UTF-8 headers
    try:
        fields = HeaderParser(policy=policy.SMTPUTF8).parsestr(header).get_all("From", [])
        addresses = [address for field in fields for address in field.addresses]
    except Exception:
        # The stdlib header parser raises assorted exceptions on malformed values.
        return ()
    domains = []
    for address in addresses:
        try:
            domains.append(_address(address.addr_spec).domain)
        except AddressError:
            domains.append(address.domain.lower())
    return tuple(domains)


@functools.lru_cache(maxsize=4096)
def _address(value: str) -> Address:
    """`parse_address`, remembered: a relay sees the same senders over and over (refusals are not cached)."""
    return parse_address(value)


def _login(session: Session) -> RelayLogin:
    login = session.auth_data
    if not isinstance(login, RelayLogin):  # aiosmtpd refuses MAIL/RCPT/DATA before AUTH (530 5.7.0)
        raise RuntimeError("session is not authenticated")
    return login


class RelayHandler:
    """aiosmtpd hooks: who may send from which domain, how many recipients, how fast; then the accept."""

    def __init__(self, domains: Domains, accepter: Accepter, limits: Limits, smtp: SmtpSettings) -> None:
        """Each account may send `smtp.rate_burst` messages at once, then `smtp.rate_per_second` (counted
        in `limits`: on every node alike when they are shared)."""
        self.domains = domains
        self.accepter = accepter
        self.limits = limits
        self.rate = smtp.rate_per_second
        self.burst = smtp.rate_burst
        self.max_recipients = smtp.max_recipients
        self._owners: dict[str, int] = {}  # domain → account; only found ones, so new domains show at once
        self._accepting = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def _owner(self, domain: str) -> int | None:
        owner = self._owners.get(domain)
        if owner is None:
            row = await self.domains.find(domain)
            if row is not None:
                owner = self._owners[domain] = row.account_id
        return owner

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's EHLO reply with PIPELINING (RFC 2920), as MTAs offer it: aiosmtpd answers buffered
        commands one at a time, in order, and DATA leaves what follows the message for the next command.
        Nothing sent with STARTTLS is kept (`RelaySMTP.smtp_STARTTLS`)."""
        session.host_name = hostname  # aiosmtpd leaves it to a 5-argument EHLO hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        login = _login(session)
        try:
            sender = _address(address)
        except AddressError as exc:
            return f"553 5.1.7 {reply_text(exc.reason)}"
        if sender.smtputf8 and not envelope.smtp_utf8:
            return "553 5.6.7 A non-ASCII sender address needs MAIL FROM with SMTPUTF8"
        if await self._owner(sender.domain) != login.account_id:
            return f"550 5.7.1 {sender.domain} is not a sending domain of this account"
        refusal = await self.accepter.domain_refusal(sender.domain)
        if refusal is not None:
            return f"550 5.7.1 {reply_text(refusal)}"
        if self.rate > 0:
            try:
                wait = await self.limits.take(f"relay:{login.account_id}", self.rate, self.burst)
            except LimitsUnavailable as exc:
                log.error("smtp MAIL refused for now: %s", exc)
                return LIMITS_UNAVAILABLE
            if wait > 0:
                log.info("smtp rate limited account=%d", login.account_id)
                return "451 4.7.1 Sending rate limit of this account exceeded, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return f"452 4.5.3 Too many recipients, at most {self.max_recipients} per message"
        try:
            recipient = _address(address)
        except AddressError as exc:
            return f"553 5.1.3 {reply_text(exc.reason)}"
        if recipient.smtputf8 and not envelope.smtp_utf8:
            return "553 5.6.7 A non-ASCII recipient address needs MAIL FROM with SMTPUTF8"
        if recipient.email not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(recipient.email)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._accepting += 1
        self._idle.clear()
        try:
            reply = await self._accept(_login(session), envelope)
            if reply.startswith("250") and isinstance(server, RelaySMTP):
                server.made_progress()
            return reply
        finally:
            self._accepting -= 1
            if not self._accepting:
                self._idle.set()

    async def _accept(self, login: RelayLogin, envelope: Envelope) -> str:
        assert envelope.mail_from is not None and isinstance(envelope.original_content, bytes)
        raw = strip_bcc(envelope.original_content)
        for domain in author_domains(raw):
            if await self._owner(domain) != login.account_id:
                return f"550 5.7.1 The From header's domain {domain} is not a sending domain of this account"
        try:
            accepted = await self.accepter.accept_raw(
                login.account_id, envelope.mail_from, list(envelope.rcpt_tos), raw
            )
        except AcceptError as exc:
            log.info("smtp refused account=%d reply=%s field=%s", login.account_id, exc.smtp, exc.field)
            return f"{exc.smtp} {reply_text(f'{exc.field}: {exc.reason}')}"
        except Exception:
            log.exception("smtp accept failed account=%d", login.account_id)
            return TEMPORARY_FAILURE
        # DEBUG, as the API's accepts: each is recorded as events and counted in the metrics already, and a
        # log line per message costs the relay a formatted write (and a wait for the GIL) per message.
        log.debug(
            "smtp accepted id=%s account=%d recipients=%d bytes=%d",
            accepted.id,
            login.account_id,
            len(accepted.recipients),
            len(raw),
        )
        if accepted.held:
            return f"250 2.0.0 Ok: {accepted.id} held for review: {reply_text('; '.join(accepted.held))}"
        return f"250 2.0.0 Ok: queued as {accepted.id}"

    async def wait_idle(self, timeout: float) -> None:
        """Wait until no message is being accepted, at most `timeout` seconds."""
        if not await wait_set(self._idle, timeout):
            log.warning("smtp stop: %d messages still being accepted", self._accepting)


def _pass_credentials_on(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """aiosmtpd calls authenticators synchronously; the decoded credentials go back unchecked so that
    `RelaySMTP` verifies them without blocking the event loop (a database read and argon2)."""
    return AuthResult(success=True, auth_data=auth_data)


Command = Callable[[Any, str], Awaitable[None]]


def _without_progress(command: Command) -> Command:
    """aiosmtpd's own command, counted by `RelaySMTP._no_progress` first (its HELP text kept)."""

    @functools.wraps(command)
    async def counted(self: RelaySMTP, arg: str) -> None:
        if await self._no_progress():
            await command(self, arg)

    return counted


class RelaySMTP(ChunkedData):
    """One client connection: aiosmtpd's protocol with credentials checked asynchronously, a limit on
    connections per client address, and enhanced status codes on aiosmtpd's own replies."""

    def __init__(self, relay: SmtpRelay, *, implicit_tls: bool, ended: Callable[[], None]) -> None:
        """`ended` is called once the connection is closed."""
        self._relay = relay
        self._ended = ended
        self._client_ip: str | None = None
        self._refused = False
        smtp = relay.settings.smtp
        super().__init__(
            relay.handler,
            data_size_limit=smtp.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=relay.settings.hostname,
            ident="Estafeta ESMTP submission",
            tls_context=None if implicit_tls else relay.tls_context,
            require_starttls=not implicit_tls,
            auth_required=True,
            auth_require_tls=True,
            authenticator=_pass_credentials_on,
            timeout=smtp.idle_timeout,
            loop=asyncio.get_running_loop(),
        )
        self._without_progress = 0
        if implicit_tls:
            # The listener wraps the whole connection in TLS, which is what AUTH requires.
            self._auth_require_tls = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # a new connection, not the STARTTLS upgrade of one
            peer = transport.get_extra_info("peername")
            client_ip = str(peer[0]) if peer else "unknown"
            if not self._relay.connections.acquire(client_ip):
                self._refused = True
                log.info("smtp connection refused ip=%s reason=too-many-connections", client_ip)
                transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
                transport.close()
                return
            self._client_ip = client_ip
            self._relay.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._ended()
        if self._refused:
            return
        if self._client_ip is not None:
            self._relay.connections.release(self._client_ip)
            self._relay.sessions.discard(self)
            self._client_ip = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._refused else super().eof_received()

    def _timeout_cb(self) -> None:
        """Silent for `smtp.idle_timeout`: say why before aiosmtpd closes the connection."""
        if self.transport is not None:
            self.transport.write(IDLE)  # type: ignore[attr-defined]
        super()._timeout_cb()

    async def _no_progress(self) -> bool:
        """Count a command that moves no message forward; past `smtp.max_commands_without_progress` since
        the last accepted message, answer 421 and close the connection (False: do not run the command)."""
        self._without_progress += 1
        if self._without_progress <= self._relay.settings.smtp.max_commands_without_progress:
            return True
        log.info("smtp session closed ip=%s reason=no-progress", self._client_ip)
        await self.push(NO_PROGRESS)
        if self.transport is not None:
            self.transport.close()
        return False

    def made_progress(self) -> None:
        """A message was accepted: the session is doing what it is for."""
        self._without_progress = 0

    smtp_NOOP = _without_progress(SMTP.smtp_NOOP)
    smtp_RSET = _without_progress(SMTP.smtp_RSET)
    smtp_HELP = _without_progress(SMTP.smtp_HELP)
    smtp_VRFY = _without_progress(SMTP.smtp_VRFY)
    smtp_EXPN = _without_progress(SMTP.smtp_EXPN)
    smtp_HELO = _without_progress(SMTP.smtp_HELO)
    smtp_EHLO = _without_progress(SMTP.smtp_EHLO)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """STARTTLS through the event loop's own TLS (`loop.start_tls`, which uvloop implements in compiled
        code) instead of the pure-Python TLS layer aiosmtpd builds, so every later reply of the session is
        encrypted and written at a fraction of the cost. aiosmtpd's notion of TLS stays as it keeps it:
        `_tls_protocol` set means TLS is on (AUTH offered, STARTTLS no longer), `session.ssl` holds the
        connection's TLS details, and the session starts afresh (RFC 3207, 4.2)."""
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
            return
        if self.tls_context is None:
            await self.push("454 4.7.0 TLS not available")
            return
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 TLS already active")
            return
        await self.push("220 2.0.0 Ready to start TLS")
        plain = self.transport
        assert plain is not None
        # Whatever the client sent in clear text after STARTTLS is discarded (RFC 3207, 5); nothing can
        # arrive in between: start_tls hands the connection to TLS before it first waits.
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        try:
            secure = await self.loop.start_tls(plain, self, self.tls_context, server_side=True)
        except Exception as error:  # a failed handshake: aiosmtpd's session loop closes the connection
            raise TLSSetupException() from error
        # Reader, writer and protocol write through the TLS transport from now on, as
        # asyncio.StreamWriter.start_tls leaves them.
        self._transport = secure
        self._over_ssl = True
        self._reader._transport = secure  # type: ignore[attr-defined]
        self._writer._transport = secure  # type: ignore[attr-defined]
        self._original_transport = plain  # closed with the session (aiosmtpd's connection_lost)
        self.transport = secure
        self._tls_protocol = secure  # type: ignore[assignment]  # aiosmtpd's test for "TLS is on"
        self._set_rset_state()
        self.session = self._create_session()
        self.session.peer = plain.get_extra_info("peername")
        self.session.ssl = {name: secure.get_extra_info(name) for name in _TLS_DETAILS}
        self._reset_timeout()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The path and the parameters after it. aiosmtpd runs the stdlib's header parser (and builds a
        class) on every MAIL and RCPT; a plain path is read with one regular expression instead."""
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None:
            try:
                return super()._getaddr(arg)
            except IndexError:  # the stdlib's parser on a path cut short ("<"): malformed (553), not a fault
                return None, None
        address, rest = plain.groups()
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, rest

    async def push(self, status: str | bytes) -> None:  # type: ignore[override]
        if isinstance(status, str):
            status = reply_line(_ENHANCED_REPLIES.get(status, status))
        await super().push(status)

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(server, args))

    async def _verify(self, parsed: AuthResult) -> AuthResult:
        """Check a login: refused unchecked (no argon2 work for a guesser) while its client address or its
        username has too many recent failures; a failure takes as long whether the username exists or not."""
        if not parsed.success or not isinstance(parsed.auth_data, LoginPassword):
            return parsed
        ip = self._client_ip or "unknown"
        username = parsed.auth_data.login.decode("utf-8", "replace")
        user_key = username[:256]
        try:
            ip_token = await self._relay.logins.attempt(ip)
            if ip_token is None:
                log.info("smtp login refused ip=%s reason=too-many-failures", ip)
                return AuthResult(success=False, handled=False, message=TOO_MANY_FAILURES)
            user_token = await self._relay.user_logins.attempt(user_key)
            if user_token is None:
                log.info("smtp login refused user=%s ip=%s reason=user-locked", reply_text(username)[:64], ip)
                return AuthResult(success=False, handled=False, message=USER_LOCKED)
        except LimitsUnavailable as exc:
            log.error("smtp login refused for now: %s", exc)
            return AuthResult(success=False, handled=False, message=LOGIN_CHECKS_UNAVAILABLE)
        try:
            password = parsed.auth_data.password.decode()
            parsed.auth_data.login.decode()
        except UnicodeDecodeError:  # no such credential can exist, but it takes as long to say so
            await self._relay.credentials.refuse()
            account_id = None
        else:
            account_id = await self._relay.credentials.account_for(username, password)
        if account_id is None:
            log.info("smtp login refused user=%s ip=%s", reply_text(username)[:64], ip)
            return AuthResult(success=False, handled=False)  # 535 5.7.8
        try:
            await self._relay.logins.succeeded(ip, ip_token)
            await self._relay.user_logins.succeeded(user_key, user_token)
        except LimitsUnavailable as exc:  # the login was right; it stays counted until its window passes
            log.error("smtp login not forgiven: %s", exc)
        return AuthResult(success=True, auth_data=RelayLogin(account_id, username))

    def shut_down(self) -> None:
        """Tell the client the service is going away and close the connection."""
        if self.transport is not None:
            self.transport.write(SHUTTING_DOWN)  # type: ignore[attr-defined]
            self.transport.close()


def load_tls_context(smtp: SmtpSettings, hostname: str) -> ssl.SSLContext:
    """The configured certificate, or a self-signed one generated once into `smtp.tls_dir` and reused."""
    if smtp.tls_cert is not None and smtp.tls_key is not None:
        return server_context(smtp.tls_cert, smtp.tls_key)
    cert, key = smtp.tls_dir / "smtp-cert.pem", smtp.tls_dir / "smtp-key.pem"
    if not (cert.is_file() and key.is_file()):
        smtp.tls_dir.mkdir(parents=True, exist_ok=True)
        names = [hostname] + ([smtp.host] if smtp.host not in ("", "0.0.0.0", "::") else [])
        write_self_signed(cert, key, names)
        log.warning(
            "smtp: generated a self-signed certificate in %s; mail clients will warn about it until "
            "smtp.tls_cert and smtp.tls_key name a trusted one",
            smtp.tls_dir,
        )
    return server_context(cert, key)


def listening_socket(host: str, port: int) -> socket.socket:
    """A relay listener on `host` (no host: every address, IPv6 and IPv4 on one socket where the system
    can, as the event loop's own servers bind it)."""
    everywhere = not host and socket.has_dualstack_ipv6()
    family = socket.AF_INET6 if ":" in host or everywhere else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=511, dualstack_ipv6=everywhere)


def _ignore() -> None:
    """No one counts the connections of a process that serves them all."""


class _Once:
    """Calls a function the first time it is called, never again."""

    def __init__(self, call: Callable[[], None]) -> None:
        self._call: Callable[[], None] | None = call

    def __call__(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call()


class SmtpRelay:
    """Both submission listeners, their shared limits and the sessions they hold open."""

    def __init__(
        self,
        settings: Settings,
        domains: Domains,
        accepter: Accepter,
        credentials: SmtpCredentials,
        limits: Limits,
    ) -> None:
        smtp = settings.smtp
        self.settings = settings
        self.credentials = credentials
        self.handler = RelayHandler(
            domains,
            accepter,
            limits,
            smtp,
        )
        self.connections = ConnectionLimiter(smtp.max_connections_per_ip)
        self.logins = LoginFailureLimiter(
            limits, "relay-login:ip", smtp.max_login_failures, smtp.login_failure_window
        )
        self.user_logins = LoginFailureLimiter(
            limits, "relay-login:user", smtp.max_login_failures_per_user, smtp.login_failure_window
        )
        self.sessions: set[RelaySMTP] = set()
        self.tls_context: ssl.SSLContext | None = None
        self._servers: list[asyncio.Server] = []  # with no front children
        self._listeners: list[socket.socket] = []  # with front children
        self._front: Supervisor | None = None
        self._inbox: Inbox | None = None
        self.serving = 0  # connections this process serves, TLS handshakes under way included
        self._opening: set[asyncio.Task[None]] = set()

    async def start(self, *, front: Supervisor | None = None, inbox: Inbox | None = None) -> SmtpPorts:
        """Listen on both ports in the running loop, serving each connection here or handing it to the
        `front` children holding fewer; or, in a front child, serve the connections the serve process
        hands over to `inbox` (the ports are the configured ones). Returns the ports (useful when
        configured as 0)."""
        smtp = self.settings.smtp
        # aiosmtpd logs every command line at INFO (addresses included) and a deprecation warning on every
        # AUTH; the relay logs its own outcomes, so only aiosmtpd's errors are kept.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.tls_context = await asyncio.to_thread(load_tls_context, smtp, self.settings.hostname)
        if inbox is not None:
            self._inbox = inbox
            inbox.listen(self._handed_over)
            return SmtpPorts(smtp.starttls_port, smtp.implicit_tls_port)
        loop = asyncio.get_running_loop()
        if front is None:  # every connection is served here: the loop's own server accepts them
            return await self._listen(loop)
        self._front = front
        try:
            for port, tag in ((smtp.starttls_port, _STARTTLS), (smtp.implicit_tls_port, _IMPLICIT_TLS)):
                listener = listening_socket(smtp.host, port)
                self._listeners.append(listener)
                listener.setblocking(False)
                loop.add_reader(listener.fileno(), self._accept, listener, tag)
        except BaseException:
            await self.stop(0)
            raise
        return self._listening(SmtpPorts(*(listener.getsockname()[1] for listener in self._listeners)))

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> SmtpPorts:
        smtp = self.settings.smtp
        starttls = await loop.create_server(
            lambda: RelaySMTP(self, implicit_tls=False, ended=_ignore), smtp.host, smtp.starttls_port
        )
        self._servers.append(starttls)
        try:
            implicit = await loop.create_server(
                lambda: RelaySMTP(self, implicit_tls=True, ended=_ignore),
                smtp.host,
                smtp.implicit_tls_port,
                ssl=self.tls_context,
            )
        except BaseException:
            await self.stop(0)
            raise
        self._servers.append(implicit)
        ports = SmtpPorts(starttls.sockets[0].getsockname()[1], implicit.sockets[0].getsockname()[1])
        return self._listening(ports)

    def _listening(self, ports: SmtpPorts) -> SmtpPorts:
        log.info(
            "smtp submission on %s port %d (STARTTLS) and port %d (TLS)",
            self.settings.smtp.host,
            ports.starttls,
            ports.implicit_tls,
        )
        return ports

    def _accept(self, listener: socket.socket, tag: bytes) -> None:
        """Connections are waiting on a listener: each goes to the process serving the fewest, a child on a
        tie (this process also accepts, and runs what only it runs)."""
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                connection, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of descriptors, or the client gave up: the next one may do
                log.warning("smtp accept failed: %s", error)
                return
            front = self._front
            child = None if front is None else front.least_handed("front")
            if front is not None and child is not None and child.handed <= self.serving:
                try:
                    front.hand_off(child, connection, tag)
                except OSError as error:
                    log.warning("smtp connection not handed to process %s: %s", child.process.pid, error)
                else:
                    connection.close()  # the child has its own copy: close, never shut down
                    continue
            self.serving += 1
            self._serve(connection, tag, self._ended_here)

    def _ended_here(self) -> None:
        self.serving -= 1

    def _handed_over(self, connection: socket.socket, tag: bytes) -> None:
        assert self._inbox is not None
        self._serve(connection, tag, self._inbox.done)

    def _serve(self, connection: socket.socket, tag: bytes, ended: Callable[[], None]) -> None:
        """Serve an accepted connection; `ended` is called once when it closes."""
        connection.setblocking(False)
        task = asyncio.create_task(self._open(connection, tag == _IMPLICIT_TLS, _Once(ended)))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open(self, connection: socket.socket, implicit_tls: bool, ended: _Once) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: RelaySMTP(self, implicit_tls=implicit_tls, ended=ended),
                connection,
                ssl=self.tls_context if implicit_tls else None,
            )
        except (OSError, ssl.SSLError):  # a failed TLS handshake: the client hears nothing more
            connection.close()  # the transport closed it already, if it had one
            ended()
        except BaseException:  # stopping, or a fault of ours
            connection.close()
            ended()
            raise

    async def stop(self, grace: float) -> None:
        """Stop listening, let messages being accepted get their reply, then close every connection."""
        loop = asyncio.get_running_loop()
        for server in self._servers:
            server.close()
        for listener in self._listeners:
            loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners = []
        if self._inbox is not None:
            self._inbox.stop()
        for task in list(self._opening):
            task.cancel()
        await asyncio.gather(*self._opening, return_exceptions=True)
        await self.handler.wait_idle(grace)
        for session in list(self.sessions):
            session.shut_down()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        for _ in range(_DRAIN_ROUNDS):  # let closed sessions run connection_lost before the loop may end
            if not self.sessions:
                break
            await asyncio.sleep(0)
