"""SMTP sessions to receiving MX servers: connect in preference order, STARTTLS when offered, reuse.

One `MxSession` carries many messages (MAIL/RCPT/DATA, RSET after a refusal) until the receiver or the
idle timer closes it; when the receiver offers PIPELINING, MAIL, RCPT and DATA go in one write
(`estafeta.delivery.pipelining`). Replies are kept verbatim for the event log.

When the destination has an MTA-STS policy (RFC 8461), only the MX hosts it names are used, and STARTTLS
must succeed with a certificate that verifies for the MX host name; in `enforce` mode a host that fails
is skipped (never used in the clear), in `testing` mode the failure is only reported. Every session
opened (or refused for TLS reasons) is told to `observe` as an RFC 8460 result, for TLS-RPT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX

from estafeta.delivery.mta_sts import Policy
from estafeta.delivery.mx import MxHost
from estafeta.delivery.pipelining import ConnectionLost, Replies, message_data

QUIT_TIMEOUT = 5.0  # seconds for the receiver's reply to QUIT
# The commands written together when pipelining, and the replies that let the transaction go on.
_PIPELINED = (("mail", (250,)), ("rcpt", (250, 251)), ("data", (354,)))


@dataclass(frozen=True)
class Reply:
    code: int | None  # None when there was no SMTP reply (connection refused, timeout, dropped)
    text: str
    stage: str | None = None  # the command refused: mail, rcpt or data (None: the connection or greeting)

    @property
    def positive(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


class ConnectFailed(Exception):
    """No MX host could be reached; `reply` says what the last one answered (or why not)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _tls_context() -> ssl.SSLContext:
    # Opportunistic TLS between MTAs (RFC 3207 §4.1): encrypt when offered, do not insist on a trusted
    # certificate, as Postfix's "may" level does. Receivers with self-signed certificates stay reachable.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_TLS = _tls_context()


def _why(exc: BaseException) -> str:
    """A short cause ("Connection refused", "timed out") rather than a library's nested wording."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | aiosmtplib.SMTPTimeoutError):
            return "timed out"
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return str(exc)


class MxSession:
    def __init__(self, smtp: aiosmtplib.SMTP, mx: MxHost, address: str, tls: bool) -> None:
        self.smtp = smtp
        self.mx = mx
        self.address = address
        self.tls = tls
        self.alive = True
        self.sent = 0
        self.details: dict[str, object] = {}  # recorded with each attempt (e.g. the MTA-STS policy applied)
        self.replies: Replies | None = None  # the connection, once handed over for PIPELINING

    async def send(self, mail_from: str, rcpt: str, raw: bytes, smtputf8: bool) -> Reply:
        """One transaction; a refusal leaves the session usable unless the server hung up."""
        stage = "mail"
        try:
            if self.smtp.is_ehlo_or_helo_needed:  # after STARTTLS: greet again, read the extensions anew
                await self.smtp.ehlo()
            options: list[str] = []
            encoding = "ascii"
            if smtputf8:
                if not self.smtp.supports_extension("smtputf8"):
                    return Reply(550, "5.6.7 the receiver does not support SMTPUTF8, needed for this address")
                options.append("SMTPUTF8")
                encoding = "utf-8"
            if self.smtp.supports_extension("size"):
                options.append(f"SIZE={len(raw)}")
            if self.smtp.supports_extension("8bitmime") and not raw.isascii():
                options.append("BODY=8BITMIME")
            # The envelope is written here: the addresses are normalised already, so aiosmtplib's parsing
            # and quoting of each one (email.utils) would only cost time.
            sender = b"FROM:<%s>" % mail_from.encode(encoding)
            recipient = b"TO:<%s>" % rcpt.encode(encoding)
            if self.replies is None and self.smtp.supports_extension("pipelining"):
                self.replies = Replies(self.smtp.transport)  # type: ignore[arg-type]
            if self.replies is not None:
                mail = b" ".join([b"MAIL", sender, *(o.encode("ascii") for o in options)])
                return await self._send_pipelined(self.replies, mail, b"RCPT " + recipient, raw)
            answer = await self.smtp.execute_command(b"MAIL", sender, *(o.encode("ascii") for o in options))
            if answer.code != 250:
                raise aiosmtplib.SMTPSenderRefused(answer.code, answer.message, mail_from)
            stage = "rcpt"
            answer = await self.smtp.execute_command(b"RCPT", recipient)
            if answer.code not in (250, 251):
                raise aiosmtplib.SMTPRecipientRefused(answer.code, answer.message, rcpt)
            stage = "data"
            response = await self.smtp.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            reply = Reply(exc.code, exc.message, stage)
            await self._after_refusal(exc.code)
            return reply
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            self.alive = False
            return Reply(None, f"connection to {self.mx.name} [{self.address}] lost: {exc}")
        self.sent += 1
        return Reply(response.code, response.message)

    def _lost(self, why: object) -> Reply:
        self.alive = False
        return Reply(None, f"connection to {self.mx.name} [{self.address}] lost: {why}")

    async def _send_pipelined(self, replies: Replies, mail: bytes, rcpt: bytes, raw: bytes) -> Reply:
        """MAIL, RCPT and DATA in one write (RFC 2920); the message once the 354 is read."""
        timeout = self.smtp.timeout
        if COMMAND_INJECTION_REGEX.search(mail) or COMMAND_INJECTION_REGEX.search(rcpt):
            raise ValueError("an envelope address holds a control character")  # as aiosmtplib refuses it
        try:
            replies.write(b"%s\r\n%s\r\nDATA\r\n" % (mail, rcpt))
        except ConnectionLost as exc:
            return self._lost(exc)
        refusal: Reply | None = None
        last = 0
        for stage, accepted in _PIPELINED:
            try:
                last, text = await replies.read(timeout)
            except ConnectionLost as exc:
                if refusal is None:
                    return self._lost(exc)
                self.alive = False  # e.g. a 421 to MAIL, after which the receiver hangs up
                return refusal
            if refusal is None and last not in accepted:
                refusal = Reply(last, text, stage)
        try:
            if refusal is not None:
                if last == 354:  # DATA taken without a sender or recipient (RFC 2920 forbids it): end it
                    await replies.command(b".", timeout)
                await self._reset_pipelined(replies, refusal.code)
                return refusal
            replies.write(message_data(raw))
            code, text = await replies.read(timeout)
        except ConnectionLost as exc:
            lost = self._lost(exc)
            return refusal or lost
        if code != 250:
            await self._reset_pipelined(replies, code)
            return Reply(code, text, "data")
        self.sent += 1
        return Reply(code, text)

    async def _reset_pipelined(self, replies: Replies, code: int | None) -> None:
        if code == 421 or not replies.open:
            self.alive = False
            return
        try:
            if (await replies.command(b"RSET", self.smtp.timeout))[0] != 250:
                self.alive = False
        except ConnectionLost:
            self.alive = False

    async def _after_refusal(self, code: int) -> None:
        if code == 421 or not self.smtp.is_connected:
            self.alive = False
            return
        try:
            await self.smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            self.alive = False

    async def close(self) -> None:
        self.alive = False
        if self.replies is not None:
            if self.replies.open:
                with contextlib.suppress(ConnectionLost):
                    await self.replies.command(b"QUIT", QUIT_TIMEOUT)
            self.replies.close()
            self.smtp.close()  # aiosmtplib's own state; the transport is closed already
            return
        try:
            if self.smtp.is_connected:
                await asyncio.wait_for(self.smtp.quit(), timeout=QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self.smtp.close()


@dataclass(frozen=True)
class TlsOutcome:
    """How securing one session went: "success" or an RFC 8460 result type, with the hosts involved."""

    result: str
    mx_host: str
    receiving_ip: str = ""
    sending_ip: str = ""
    detail: str = ""  # failure-reason-code


Observer = Callable[[TlsOutcome], None]

# OpenSSL verification codes (X509_V_ERR_*) and the RFC 8460 result types they mean.
_CERTIFICATE_RESULTS = {
    9: "certificate-expired",  # not yet valid
    10: "certificate-expired",
    62: "certificate-host-mismatch",
}


def certificate_result(error: ssl.SSLCertVerificationError) -> str:
    return _CERTIFICATE_RESULTS.get(error.verify_code, "certificate-not-trusted")


class _Refused(Exception):
    """This host cannot be used under the destination's MTA-STS policy (the reply says why)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


async def _connect(smtp: aiosmtplib.SMTP, timeout: float) -> str:
    """Connect and greet; returns the local address the connection left from."""
    await smtp.connect(timeout=timeout)
    await smtp.ehlo()
    sockname = smtp.get_transport_info("sockname")
    return str(sockname[0]) if sockname else ""


async def open_session(
    hosts: list[MxHost],
    *,
    port: int,
    local_hostname: str,
    tls: str,
    connect_timeout: float,
    command_timeout: float,
    source_address: str | None = None,
    policy: Policy | None = None,
    verify: ssl.SSLContext | None = None,
    observe: Observer | None = None,
) -> MxSession:
    """Connect to the first MX host (by preference, then address) that answers with a 2xx greeting,
    from `source_address` when given (an address of the stream's IP pool), greeting as `local_hostname`.

    With an MTA-STS `policy` in `enforce` or `testing` mode, certificates are verified with `verify`.
    Otherwise, with opportunistic TLS, a receiver whose STARTTLS is broken gets its mail in plaintext."""
    last = Reply(None, "no MX host to try")
    checking = policy is not None and policy.mode in ("enforce", "testing") and verify is not None
    enforce = checking and policy is not None and policy.mode == "enforce"
    domain = policy.domain if policy is not None else ""

    def seen(outcome: TlsOutcome) -> None:
        if observe is not None:
            observe(outcome)

    def client(address: str) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=address,
            port=port,
            local_hostname=local_hostname,
            timeout=command_timeout,
            start_tls=False,
            tls_context=_TLS,
            source_address=(source_address, 0) if source_address else None,
        )

    for mx in hosts:
        verified = checking and policy is not None and policy.allows(mx.name)
        if checking and not verified:
            seen(TlsOutcome("validation-failure", mx.name, detail="mx-not-in-policy"))
            if enforce:
                last = Reply(
                    None,
                    f"MTA-STS policy of {domain} (enforce) does not list the MX host {mx.name}; "
                    "not delivered there",
                )
                continue
        for address in mx.addresses:
            smtp = client(address)
            try:
                sending_ip = await _connect(smtp, connect_timeout)
                if not smtp.supports_extension("starttls"):
                    if checking or tls != "off":
                        seen(TlsOutcome("starttls-not-supported", mx.name, address, sending_ip))
                    if enforce and verified:
                        raise _Refused(
                            Reply(
                                None,
                                f"{mx.name} [{address}] does not offer STARTTLS, which the MTA-STS policy "
                                f"of {domain} (enforce) requires",
                            )
                        )
                    if tls == "required":
                        raise _Refused(
                            Reply(None, f"{mx.name} [{address}] does not offer STARTTLS, which is required")
                        )
                    return MxSession(smtp, mx, address, False)
                if verified and verify is not None:
                    try:
                        await smtp.starttls(tls_context=verify, server_hostname=mx.name)
                    except ssl.SSLCertVerificationError as exc:
                        result = certificate_result(exc)
                        seen(TlsOutcome(result, mx.name, address, sending_ip, exc.verify_message))
                        why = f"the certificate of {mx.name} [{address}] is not valid ({exc.verify_message})"
                        if enforce:
                            raise _Refused(
                                Reply(None, f"{why}; the MTA-STS policy of {domain} (enforce) requires one")
                            ) from exc
                        smtp.close()  # testing: report, then deliver as without a policy
                        smtp = client(address)
                        sending_ip = await _connect(smtp, connect_timeout)
                        await smtp.starttls(tls_context=_TLS, server_hostname=mx.name)
                        return MxSession(smtp, mx, address, True)
                    seen(TlsOutcome("success", mx.name, address, sending_ip))
                    return MxSession(smtp, mx, address, True)
                if tls == "off" and not checking:
                    return MxSession(smtp, mx, address, False)
                try:
                    await smtp.starttls(tls_context=_TLS, server_hostname=mx.name)
                except (aiosmtplib.SMTPException, OSError):
                    if tls != "opportunistic":
                        raise
                    # A broken STARTTLS (refused, or a failed handshake) under opportunistic TLS: a new
                    # connection to the same host in plaintext, as Postfix's "may" level does.
                    smtp.close()
                    smtp = client(address)
                    await _connect(smtp, connect_timeout)
                    return MxSession(smtp, mx, address, False)
                seen(TlsOutcome("success", mx.name, address, sending_ip))
                return MxSession(smtp, mx, address, True)
            except _Refused as exc:
                last = exc.reply
                await _quit(smtp)
                continue
            except aiosmtplib.SMTPResponseException as exc:
                last = Reply(exc.code, exc.message)
            except ssl.SSLError as exc:
                if verified:
                    seen(
                        TlsOutcome("validation-failure", mx.name, address, detail=exc.reason or "tls-failure")
                    )
                last = Reply(None, f"TLS with {mx.name} [{address}]:{port} failed: {exc.reason or exc}")
            except (aiosmtplib.SMTPException, OSError) as exc:
                last = Reply(None, f"connection to {mx.name} [{address}]:{port} failed: {_why(exc)}")
            smtp.close()
    raise ConnectFailed(last)


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        if smtp.is_connected:
            await asyncio.wait_for(smtp.quit(), timeout=5)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    smtp.close()
