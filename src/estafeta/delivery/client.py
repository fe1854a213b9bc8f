"""SMTP sessions to receiving MX servers: connect in preference order, STARTTLS when offered, reuse.

One `MxSession` carries many messages (MAIL/RCPT/DATA, RSET after a refusal) until the receiver or the
idle timer closes it. Replies are kept verbatim for the event log.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass

import aiosmtplib

from estafeta.delivery.mx import MxHost


@dataclass(frozen=True)
class Reply:
    code: int | None  # None when there was no SMTP reply (connection refused, timeout, dropped)
    text: str

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

    async def send(self, mail_from: str, rcpt: str, raw: bytes, smtputf8: bool) -> Reply:
        """One transaction; a refusal leaves the session usable unless the server hung up."""
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
        try:
            await self.smtp.mail(mail_from, options=options, encoding=encoding)
            await self.smtp.rcpt(rcpt, encoding=encoding)
            response = await self.smtp.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            reply = Reply(exc.code, exc.message)
            await self._after_refusal(exc.code)
            return reply
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            self.alive = False
            return Reply(None, f"connection to {self.mx.name} [{self.address}] lost: {exc}")
        self.sent += 1
        return Reply(response.code, response.message)

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
        try:
            if self.smtp.is_connected:
                await asyncio.wait_for(self.smtp.quit(), timeout=5)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self.smtp.close()


async def open_session(
    hosts: list[MxHost],
    *,
    port: int,
    local_hostname: str,
    tls: str,
    connect_timeout: float,
    command_timeout: float,
    source_address: str | None = None,
) -> MxSession:
    """Connect to the first MX host (by preference, then address) that answers with a 2xx greeting,
    from `source_address` when given (an address of the stream's IP pool)."""
    last = Reply(None, "no MX host to try")
    for mx in hosts:
        for address in mx.addresses:
            smtp = aiosmtplib.SMTP(
                hostname=address,
                port=port,
                local_hostname=local_hostname,
                timeout=command_timeout,
                start_tls=False,
                tls_context=_TLS,
                source_address=(source_address, 0) if source_address else None,
            )
            try:
                await smtp.connect(timeout=connect_timeout)
                await smtp.ehlo()
                secured = False
                if tls != "off" and smtp.supports_extension("starttls"):
                    await smtp.starttls(tls_context=_TLS, server_hostname=mx.name)
                    secured = True
                if tls == "required" and not secured:
                    last = Reply(None, f"{mx.name} [{address}] does not offer STARTTLS, which is required")
                    await smtp.quit()
                    continue
                return MxSession(smtp, mx, address, secured)
            except aiosmtplib.SMTPResponseException as exc:
                last = Reply(exc.code, exc.message)
            except (aiosmtplib.SMTPException, OSError) as exc:
                last = Reply(None, f"connection to {mx.name} [{address}]:{port} failed: {_why(exc)}")
            smtp.close()
    raise ConnectFailed(last)
