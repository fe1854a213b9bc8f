"""SMTP transactions with RFC 2920 PIPELINING: MAIL, RCPT and DATA in one write, their replies read in order.

aiosmtplib reads exactly one reply per command written, and drops what arrives before a reply is asked
for, so it cannot pipeline. Once a session is set up (greeting, EHLO, STARTTLS, EHLO again, all through
aiosmtplib) and the receiver offers PIPELINING, the connection's transport is handed to `Replies`, which
keeps every reply that arrives, in order. A message then costs two round trips instead of four (MAIL,
RCPT, DATA / the message), and half the writes and wake-ups.

Each reply is still matched with its command, so a refusal keeps its stage (mail, rcpt or data) for the
bounce classifier.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

TIMED_OUT = "Timed out waiting for server response"  # aiosmtplib's words, as in unpipelined sessions
MAX_REPLY_LINE = 8192  # bytes; a longer line is not SMTP (RFC 5321 4.5.3.1.5 allows 512)


class ConnectionLost(Exception):
    """The receiver closed or reset the connection, timed out, or sent what is not an SMTP reply."""


class Replies(asyncio.Protocol):
    """Takes over a connected transport: every reply the receiver sends is kept until it is read."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._buffer = bytearray()
        self._lines: list[str] = []  # the lines of a multi-line reply read so far
        self._replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: str | None = None
        transport.set_protocol(self)

    @property
    def open(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if not line[:3].isdigit():
                self._fail(f"not an SMTP reply: {line[:80]!r}")
                return
            self._lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
            if line[3:4] != b"-":
                self._replies.append((int(line[:3]), "\n".join(self._lines)))
                self._lines = []
        if len(self._buffer) > MAX_REPLY_LINE:
            self._fail("reply line too long")
        self._wake()

    def eof_received(self) -> bool:
        self._fail("the receiver closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}" if exc else "the receiver closed the connection")

    def _fail(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
        self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if not self.open:
            raise ConnectionLost(self._lost or "the connection is closed")
        self.transport.write(data)

    async def read(self, timeout: float) -> tuple[int, str]:
        """The next reply, in the order the commands were written."""
        while not self._replies:
            if self._lost is not None:
                raise ConnectionLost(self._lost)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                self._fail(TIMED_OUT)
                raise ConnectionLost(TIMED_OUT) from None
            finally:
                self._waiter = None
        return self._replies.popleft()

    async def command(self, line: bytes, timeout: float) -> tuple[int, str]:
        self.write(line + b"\r\n")
        return await self.read(timeout)

    def close(self) -> None:
        self._lost = self._lost or "closed"
        self.transport.close()


def message_data(raw: bytes) -> bytes:
    """The message as sent after the 354: CRLF line ends, leading dots doubled, the final dot line.

    Stored messages are signed with CRLF line ends and rarely have a line starting with a dot, so each
    rewrite runs only when a count or a search finds it needed (a regular expression over every line was
    a noticeable part of delivery's CPU)."""
    crlf = raw.count(b"\r\n")
    if crlf != raw.count(b"\n") or crlf != raw.count(b"\r") or not raw.endswith(b"\r\n"):
        raw = normalize_message_line_endings(raw)
    if raw.startswith(b".") or b"\n." in raw:
        raw = PERIOD_REGEX.sub(b"..", raw)
    return raw + b".\r\n"
