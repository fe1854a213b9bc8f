"""Faulty receivers of the simulated internet, seen by bare SMTP clients: each misbehaves as described
until the world heals it, and then accepts mail like any other provider."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from estafeta.world import World
from tests.test_world import RawSMTP, message

DATA = message("news@acme.test", "ann@x.test")


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world = World(trickle=0.02)
    await world.start()
    yield world
    await world.stop()


async def _healed_accepts(world: World, domain: str, address: str) -> None:
    world.heal(domain)
    client = await RawSMTP.connect(address, world.smtp_port)
    assert (await client.transaction("b@acme.test", f"ann@{domain}", DATA)).startswith("250")
    await client.close()
    assert len(world.received(domain)) == 1


async def test_hang_after_data_never_answers_the_end_of_data(world: World) -> None:
    client = await RawSMTP.connect("127.0.0.20", world.smtp_port)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.transaction("b@acme.test", "ann@hang.test", DATA), 1.0)
    await client.close()
    assert world.received("hang.test") == [] and world.ledger().acknowledged == ()
    await _healed_accepts(world, "hang.test", "127.0.0.20")


async def test_reset_in_data_resets_the_connection_while_the_message_is_sent(world: World) -> None:
    client = await RawSMTP.connect("127.0.0.21", world.smtp_port)
    assert (await client.command("MAIL FROM:<b@acme.test>")).startswith("250")
    assert (await client.command("RCPT TO:<ann@reset.test>")).startswith("250")
    assert (await client.command("DATA")).startswith("354")
    client.writer.write(DATA[:20] + b"\r\n")
    with pytest.raises(ConnectionResetError):  # a reset, not an orderly close
        await client.reader.read()
    client.writer.close()
    assert world.received("reset.test") == []
    await _healed_accepts(world, "reset.test", "127.0.0.21")


async def test_broken_tls_offers_starttls_then_fails_the_handshake_but_plaintext_works(world: World) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.22", port=world.smtp_port, start_tls=False, timeout=5)
    await smtp.connect()
    await smtp.ehlo()
    assert smtp.supports_extension("starttls")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, OSError)):
        await smtp.starttls(tls_context=context)
    smtp.close()
    plain = await RawSMTP.connect("127.0.0.22", world.smtp_port)
    assert (await plain.transaction("b@acme.test", "ann@badtls.test", DATA)).startswith("250")
    await plain.close()


async def test_421_storm_greets_with_421_and_hangs_up(world: World) -> None:
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.23", world.smtp_port)
        greeting = await reader.readline()
        assert greeting.startswith(b"421 4.7.0 ")
        assert await reader.read() == b""
        writer.close()
    assert world.stats()["storm.test"].connections == 3
    await _healed_accepts(world, "storm.test", "127.0.0.23")


async def test_slow_loris_trickles_its_replies_a_byte_at_a_time(world: World) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.24", world.smtp_port)
    first = await reader.read(100)
    assert first == b"2"  # one byte of "220 …", the rest still to come
    rest = await asyncio.wait_for(reader.readline(), 10)
    assert (first + rest).startswith(b"220 mx.slow.test")
    writer.close()
    await _healed_accepts(world, "slow.test", "127.0.0.24")


async def test_reset_makes_healed_providers_faulty_again(world: World) -> None:
    world.heal("storm.test")
    world.reset()
    reader, writer = await asyncio.open_connection("127.0.0.23", world.smtp_port)
    assert (await reader.readline()).startswith(b"421 ")
    writer.close()
    with pytest.raises(KeyError):
        world.heal("nowhere.test")
