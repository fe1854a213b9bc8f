"""The benchmark's mail client: one SMTP submission session as `smtp-source` runs one, at little CPU.

`bench smtp` measures the relay against Postfix fed by `smtp-source` (C); its clients share the machine with
the relay, so their CPU is taken from what is measured, and a general-purpose client (aiosmtplib) spent
about twice this one's per message. This one is a bare protocol on the event loop (uvloop's TLS through
`loop.start_tls`): one command at a time, each reply read and its code checked before the next command is
written, as `smtp-source` does without pipelining.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ssl
from typing import cast


class Refused(Exception):
    """The server answered a command with another code than the one the step expects."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class _Replies(asyncio.Protocol):
    """Splits what the server sends into replies (multi-line ones joined) for the one waiting command."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._lines: list[bytes] = []
        self._ready: collections.deque[tuple[int, bytes]] = collections.deque()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while (end := buffer.find(b"\r\n", start)) != -1:
            line = buffer[start:end]
            start = end + 2
            if line[3:4] == b"-":  # a reply continues on the next line
                self._lines.append(line)
                continue
            if self._lines:
                self._lines.append(line)
                text = b"\n".join(part[4:] for part in self._lines)
                self._lines = []
            else:
                text = line[4:]
            try:
                reply = (int(line[:3]), text)
            except ValueError:
                reply = (0, line)  # not a reply: refused as such by the step that reads it
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self._waiter = None
                waiter.set_result(reply)
            else:
                self._ready.append(reply)
        self._buffer = buffer[start:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def reply(self) -> asyncio.Future[tuple[int, bytes]]:
        """The next reply: one already received, or a future the next complete reply resolves."""
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if self._ready:
            future.set_result(self._ready.popleft())
        elif self._lost is not None:
            future.set_exception(self._lost)
        else:
            self._waiter = future
        return future


class Submission:
    """One session: connect, EHLO, STARTTLS, EHLO, AUTH PLAIN; then `send` per message; `quit` at the end."""

    def __init__(self, replies: _Replies) -> None:
        self._replies = replies

    @classmethod
    async def open(
        cls, host: str, port: int, tls: ssl.SSLContext, username: str, password: str
    ) -> Submission:
        loop = asyncio.get_running_loop()
        _, replies = await loop.create_connection(_Replies, host, port)
        session = cls(replies)
        await session._expect(None, 220)
        await session._expect(b"EHLO bench.test\r\n", 250)
        await session._expect(b"STARTTLS\r\n", 220)
        assert replies.transport is not None
        secure = await loop.start_tls(replies.transport, replies, tls, server_hostname=host)
        assert secure is not None
        replies.transport = secure
        await session._expect(b"EHLO bench.test\r\n", 250)
        token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode())
        await session._expect(b"AUTH PLAIN " + token + b"\r\n", 235)
        return session

    async def _expect(self, command: bytes | None, code: int) -> bytes:
        """Write one command (None: only read the greeting), then wait for its reply and check its code."""
        if command is not None:
            assert self._replies.transport is not None
            self._replies.transport.write(command)
        answer, text = await self._replies.reply()
        if answer != code:
            raise Refused(answer, text.decode("utf-8", "replace"))
        return text

    async def send(self, sender: str, recipient: str, data: bytes) -> bytes:
        """MAIL, RCPT, DATA, then `data` as DATA carries it (`delivery.pipelining.message_data`): each
        waits for its reply; returns the text of the last 250. A refusal raises `Refused` after an RSET, so
        the session can go on."""
        try:
            await self._expect(f"MAIL FROM:<{sender}>\r\n".encode(), 250)
            await self._expect(f"RCPT TO:<{recipient}>\r\n".encode(), 250)
            await self._expect(b"DATA\r\n", 354)
            return await self._expect(data, 250)
        except Refused:
            await self._expect(b"RSET\r\n", 250)
            raise

    async def quit(self) -> None:
        await self._expect(b"QUIT\r\n", 221)
        assert self._replies.transport is not None
        self._replies.transport.close()
