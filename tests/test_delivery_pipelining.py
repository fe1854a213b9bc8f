"""Pipelined SMTP sessions against a real loopback receiver that offers PIPELINING and answers each
batch of commands in one write: the envelope goes in one write, every refusal keeps its stage, and the
session stays usable after a refusal unless the receiver hung up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from estafeta.delivery.client import MxSession, open_session
from estafeta.delivery.mx import MxHost
from estafeta.delivery.pipelining import message_data

HANG_UP = b"354 go on (and hang up after the message)"
MESSAGE = b"From: a@acme.test\r\nTo: b@yahoo.test\r\nSubject: hi\r\n\r\n.a line with a leading dot\r\n"


class ScriptedReceiver(asyncio.Protocol):
    """Replies to MAIL, RCPT and DATA from `script` (in order, then 250/250/354), all replies to one read
    in one write, as a pipelining server does; keeps the commands of each read and the messages."""

    def __init__(self, script: Iterator[tuple[bytes, bytes, bytes]], reads: list[list[bytes]]) -> None:
        self.script = script
        self.reads = reads
        self.messages: list[bytes] = []
        self.buffer = b""
        self.body: bytes | None = None
        self.replies: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 mx.yahoo.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        out, commands = b"", []
        while True:
            if self.body is not None:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.messages.append(self.body + self.buffer[2 : end + 2])  # after the CRLF put first
                self.buffer, self.body = self.buffer[end + 5 :], None
                if self.replies[2] == HANG_UP:
                    self.transport.close()
                    return
                out += b"250 2.0.0 queued\r\n"
                continue
            line, found, rest = self.buffer.partition(b"\r\n")
            if not found:
                break
            self.buffer = rest
            verb = line[:4].upper()
            commands.append(verb)
            if verb == b"EHLO":
                out += b"250-mx.yahoo.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            elif verb == b"MAIL":
                self.replies = next(self.script, (b"250 ok", b"250 ok", b"354 go on"))
                out += self.replies[0] + b"\r\n"
                if self.replies[0].startswith(b"421"):
                    self.transport.write(out)
                    self.transport.close()
                    return
            elif verb == b"RCPT":
                out += self.replies[1] + b"\r\n"
            elif verb == b"DATA":
                out += self.replies[2] + b"\r\n"
                if self.replies[2].startswith(b"354"):
                    self.body = b""
                    self.buffer = b"\r\n" + self.buffer  # the terminator may be the very first line
            elif verb == b"QUIT":
                out += b"221 bye\r\n"
            else:
                out += b"250 ok\r\n"
        self.reads.append(commands)
        if out:
            self.transport.write(out)


@asynccontextmanager
async def receiver(
    *script: tuple[bytes, bytes, bytes],
) -> AsyncIterator[tuple[MxSession, list[list[bytes]], list[ScriptedReceiver]]]:
    reads: list[list[bytes]] = []
    sessions: list[ScriptedReceiver] = []
    steps = iter(script)

    def protocol() -> ScriptedReceiver:
        sessions.append(ScriptedReceiver(steps, reads))
        return sessions[-1]

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = await open_session(
        [MxHost("mx.yahoo.test", 10, ("127.0.0.1",))],
        port=port,
        local_hostname="out.acme.test",
        tls="off",
        connect_timeout=5,
        command_timeout=5,
    )
    try:
        yield session, reads, sessions
    finally:
        await session.close()
        server.close()


async def test_the_envelope_goes_in_one_write_and_the_message_after_the_354() -> None:
    async with receiver() as (session, reads, sessions):
        first = await session.send("bounce@acme.test", "b@yahoo.test", MESSAGE, False)
        second = await session.send("bounce@acme.test", "c@yahoo.test", MESSAGE, False)
    assert (first.code, second.code, first.stage) == (250, 250, None)
    assert [b"MAIL", b"RCPT", b"DATA"] in reads  # one read: the receiver got them in one write
    assert sessions[0].messages == [MESSAGE.replace(b"\r\n.a", b"\r\n..a")] * 2  # dot-stuffed


async def test_a_refused_recipient_keeps_its_stage_and_the_session_goes_on() -> None:
    refused = (b"250 ok", b"550 5.1.1 no such user", b"554 5.5.1 no valid recipients")
    async with receiver(refused) as (session, _, sessions):
        reply = await session.send("bounce@acme.test", "gone@yahoo.test", MESSAGE, False)
        assert (reply.code, reply.text, reply.stage, session.alive) == (
            550,
            "5.1.1 no such user",
            "rcpt",
            True,
        )
        after = await session.send("bounce@acme.test", "b@yahoo.test", MESSAGE, False)
    assert after.code == 250 and len(sessions[0].messages) == 1


async def test_a_354_after_a_refused_recipient_is_ended_without_a_message() -> None:
    careless = (b"250 ok", b"550 5.1.1 no such user", b"354 go on")  # RFC 2920 says it must not
    async with receiver(careless) as (session, _, sessions):
        reply = await session.send("bounce@acme.test", "gone@yahoo.test", MESSAGE, False)
        after = await session.send("bounce@acme.test", "b@yahoo.test", MESSAGE, False)
    assert (reply.code, reply.stage, after.code) == (550, "rcpt", 250)
    assert sessions[0].messages == [b"", MESSAGE.replace(b"\r\n.a", b"\r\n..a")]  # the empty one ended it


async def test_a_receiver_that_hangs_up_after_a_refusal_ends_the_session() -> None:
    async with receiver((b"250 ok", b"550 5.1.1 no such user", HANG_UP)) as (session, _, _):
        reply = await session.send("bounce@acme.test", "gone@yahoo.test", MESSAGE, False)
        assert (reply.code, reply.stage, session.alive) == (550, "rcpt", False)


async def test_a_refused_sender_and_a_421_that_hangs_up() -> None:
    async with receiver((b"553 5.7.1 sender refused", b"503 no sender", b"503 no sender")) as (session, _, _):
        reply = await session.send("bounce@acme.test", "b@yahoo.test", MESSAGE, False)
        assert (reply.code, reply.stage, session.alive) == (553, "mail", True)
    async with receiver((b"421 4.7.0 try later", b"", b"")) as (session, _, _):
        reply = await session.send("bounce@acme.test", "b@yahoo.test", MESSAGE, False)
        assert (reply.code, reply.text, reply.stage, session.alive) == (421, "4.7.0 try later", "mail", False)


async def test_a_refused_message_is_a_data_refusal() -> None:
    async with receiver((b"250 ok", b"250 ok", b"451 4.3.0 try again")) as (session, _, _):
        reply = await session.send("bounce@acme.test", "b@yahoo.test", MESSAGE, False)
        assert (reply.code, reply.stage, session.alive) == (451, "data", True)


@given(
    st.lists(
        st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b" x", b"\r\n.", b"\n."]), max_size=30
    )
)
def test_message_data_is_what_aiosmtplib_would_send(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert message_data(raw) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw)) + b".\r\n"
