"""The relay reads DATA in chunks, and what a client sees must be what aiosmtpd's line-by-line reading gives:
the same replies, the same message, the session going on after a refusal. Both servers run on loopback and
get the same bytes, written in pieces so that lines and the final CRLF.CRLF straddle TCP segments."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from estafeta.smtp.data import ChunkedData

SIZE_LIMIT = 3000


class Keep:
    """aiosmtpd handler that keeps what DATA delivered."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes) and envelope.content == envelope.original_content
        self.messages.append(envelope.original_content)
        return "250 Kept"


Server = tuple[int, Keep]


async def _serve(kind: type[SMTP]) -> tuple[asyncio.Server, Keep]:
    keep = Keep()
    server = await asyncio.get_running_loop().create_server(
        lambda: kind(keep, data_size_limit=SIZE_LIMIT, hostname="relay.test"), "127.0.0.1", 0
    )
    return server, keep


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    """aiosmtpd's own SMTP, then the relay's chunked reading."""
    started = [await _serve(SMTP), await _serve(ChunkedData)]
    plain, chunked = ((server.sockets[0].getsockname()[1], keep) for server, keep in started)
    yield plain, chunked
    for server, _ in started:
        server.close()
        await server.wait_closed()


async def _exchange(port: int, pieces: list[bytes]) -> list[bytes]:
    """One transaction whose data is written in `pieces`, then NOOP: the replies from DATA on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies: list[bytes] = []

    async def reply() -> bytes:
        while (line := await reader.readuntil(b"\r\n"))[3:4] == b"-":
            pass
        return line

    await reply()
    for command in (b"EHLO client.test", b"MAIL FROM:<a@client.test>", b"RCPT TO:<b@relay.test>", b"DATA"):
        writer.write(command + b"\r\n")
        replies.append(await reply())
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.002)  # separate segments, so the server reads the pieces apart
    replies.append(await reply())
    writer.write(b"NOOP\r\n")
    replies.append(await reply())
    writer.close()
    await writer.wait_closed()
    return replies


async def _compare(servers: tuple[Server, Server], pieces: list[bytes]) -> list[bytes]:
    (plain, plain_kept), (chunked, chunked_kept) = servers
    expected = await _exchange(plain, pieces)
    assert await _exchange(chunked, pieces) == expected, pieces
    assert chunked_kept.messages == plain_kept.messages, pieces
    return expected


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\nbare\nlf\n.\nstill in\r\n.\rnot the end\r\n"


@pytest.mark.parametrize(
    "data",
    [
        MESSAGE + b".\r\n",
        b".\r\n",  # an empty message
        b"..\r\n.\r\n",  # a message of one dot
        b"x\r\n.\r\nNOOP\r\n",  # a command right after the end, in the same segment
        (b"y" * 76 + b"\r\n") * 60 + b".\r\n",  # over the size limit
        b"z" * 1100 + b"\r\n.\r\n",  # a line longer than the reader holds
        b"z" * 999 + b"\r\n" + b"z" * 1000 + b"\r\n.\r\n",  # the longest line taken, one octet more
        b"." + b"z" * 999 + b"\r\n.\r\n",  # the stuffing dot counts
        b"z" * 5000 + b"\r\n.\r\n",  # too long and too much: the first wins
        b"ok\r\n" * 800 + b"z" * 1500 + b"\r\n.\r\n",
    ],
    ids=[
        "stuffing-and-bare-lf",
        "empty",
        "one-dot",
        "command-after-end",
        "too-much",
        "line-over-reader-limit",
        "line-at-limit",
        "stuffing-dot-counts",
        "too-long-before-too-much",
        "too-much-before-too-long",
    ],
)
async def test_replies_and_message_are_aiosmtpds(servers: tuple[Server, Server], data: bytes) -> None:
    await _compare(servers, [data])


async def test_the_end_of_data_split_at_every_octet(servers: tuple[Server, Server]) -> None:
    data = MESSAGE + b".\r\n"
    for cut in range(len(data) - 6, len(data)):
        replies = await _compare(servers, _split(data, [cut]))
        assert replies[-2].startswith(b"250 Kept")


async def test_random_data_in_random_pieces(servers: tuple[Server, Server]) -> None:
    draw = random.Random(5321)
    parts = [b"", b".", b"..", b"\n", b"\r", b".\n", b"text", b"\r\n.", b"z" * 998, b"z" * 1002, b"y" * 700]
    for _ in range(60):
        lines = (b"".join(draw.choices(parts, k=draw.randint(0, 3))) for _ in range(draw.randint(0, 8)))
        body = b"\r\n".join(lines)
        data = b"\r\n" + body + b"\r\n"
        while b"\r\n.\r\n" in data:  # no end before the end
            data = data.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        data = data[2:] + b".\r\n"
        await _compare(servers, _split(data, draw.sample(range(len(data)), k=min(len(data), 3))))
