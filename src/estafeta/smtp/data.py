"""Reading a message after DATA in large chunks, with the outcome aiosmtpd's line-by-line reading gives.

aiosmtpd awaits one `readuntil` per line of the message and checks each; a 2 KB message costs some thirty
awaits. Here the bytes are taken as they arrive up to the CRLF.CRLF that ends the data (it may straddle
chunks), then checked at once. What the client sees is aiosmtpd's: lines end with CRLF only (a bare LF is
part of the line), a line of more than `line_limit` octets (CRLF and stuffing dot included) makes
the data refused with 500, more than `size_limit` octets of data with 552, whichever comes first in the
stream; the rest is still read to the end, and a leading dot is removed from every line (RFC 5321, 4.5.2).
"""

from __future__ import annotations

import asyncio
import enum
import logging

from aiosmtpd.smtp import MISSING, SMTP, syntax

log = logging.getLogger("estafeta.smtp")

END = b"\r\n.\r\n"
_CHUNK = 1 << 24  # more than a stream reader ever holds: a read takes all it has


class Refusal(enum.Enum):
    """Why the data is refused, as aiosmtpd's `_DataState` says it."""

    TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
    TOO_MUCH = "552 Error: Too much mail data"


def verdict(lines: bytes, size_limit: int | None, line_limit: int) -> Refusal | None:
    """aiosmtpd's verdict on complete lines (each ending in CRLF, dots still stuffed), in stream order: a
    line its reader cannot hold (more than `line_limit` octets before CRLF) is too long before it counts;
    then the total size; then the line with its CRLF against `line_limit`."""
    if (not size_limit or len(lines) <= size_limit) and max(map(len, lines.split(b"\r\n"))) + 2 <= line_limit:
        return None  # the usual case, checked in C
    size = 0
    for line in lines.split(b"\r\n")[:-1]:
        if len(line) > line_limit:
            return Refusal.TOO_LONG
        size += len(line) + 2
        if size_limit and size > size_limit:
            return Refusal.TOO_MUCH
        if len(line) + 2 > line_limit:
            return Refusal.TOO_LONG
    return None


def unstuffed(lines: bytes) -> bytes:
    """The message: the leading dot of each line removed (RFC 5321, 4.5.2), as aiosmtpd removes it."""
    return (b"\r\n" + lines).replace(b"\r\n.", b"\r\n")[2:]


async def read_data(reader: asyncio.StreamReader, size_limit: int | None, line_limit: int) -> bytes | Refusal:
    """The data up to the line holding only a dot, still dot-stuffed with its last CRLF, or why it is
    refused; what the client sent after the end stays in `reader` for the next command."""
    received = bytearray(END[:2])  # the data starts a line, so it may end at once with ".\r\n"
    searched = 0
    while True:
        chunk = await reader.read(_CHUNK)
        if not chunk:  # the client went away without ending the data, as aiosmtpd's readuntil reports it
            raise asyncio.IncompleteReadError(bytes(received[2:]), None)
        received += chunk
        end = received.find(END, searched)
        if end != -1:
            reader._buffer[:0] = received[end + len(END) :]  # type: ignore[attr-defined]
            lines = bytes(received[2 : end + 2])
            return verdict(lines, size_limit, line_limit) or lines
        searched = len(received) - len(END) + 1
        # Past the limit by more than a partial end line (".\r"): refused whatever follows; which refusal
        # depends on lines not complete yet, so the rest is read line by line.
        if size_limit and len(received) - 2 > size_limit + 2:
            reader._buffer[:0] = received[2:]  # type: ignore[attr-defined]
            return await _drain(reader, size_limit, line_limit)


async def _drain(reader: asyncio.StreamReader, size_limit: int, line_limit: int) -> Refusal:
    """aiosmtpd's own reading of DATA, keeping nothing: read to the end, say which refusal came first."""
    state: Refusal | None = None
    size = 0
    fragment = False  # a part of a line too long for the reader was read: the rest of it follows
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as error:
            state = state or Refusal.TOO_LONG
            line = await reader.read(error.consumed)
        if not fragment and line == b".\r\n":
            break
        size += len(line)
        if state is None and size > size_limit:
            state = Refusal.TOO_MUCH
        fragment = not line.endswith(b"\r\n")
        if state is None and len(line) > line_limit:
            state = Refusal.TOO_LONG
    assert state is not None, "entered only past the size limit"
    return state


class ChunkedData(SMTP):
    """aiosmtpd's SMTP session with DATA read by `read_data`."""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the message read in chunks (`estafeta.smtp.data`) rather than line by line;
        its replies, its envelope (`original_content`, `content`) and its handler hook are kept."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
        except asyncio.CancelledError:
            log.info("smtp connection lost during DATA peer=%s", self.session.peer if self.session else None)
            self._writer.close()
            raise
        if isinstance(data, Refusal):
            await self.push(data.value)
            self._set_post_data_state()
            return
        original = unstuffed(data)
        content: str | bytes = original
        if self._decode_data and self.enable_SMTPUTF8:
            content = original.decode("utf-8", "surrogateescape")
        elif self._decode_data:
            try:
                content = original.decode("ascii")
            except UnicodeDecodeError:  # the client sent what the server said it does not take
                await self.push("500 Error: strict ASCII mode")
                return
        self.envelope.content = content
        self.envelope.original_content = original
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)
