"""The simulated internet, exercised over real loopback sockets with stock DNS and SMTP clients."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import socket
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib
import dkim
import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import dns.update
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from estafeta.clock import ManualClock
from estafeta.world import World, WorldThread, start_world_process, zone_line

RATE_LIMITED = (
    "421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address."
)


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, str]:
    """(private key PEM for dkimpy, DKIM TXT record with the 2048-bit public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem, pkcs1 = serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL
    private = key.private_bytes(pem, pkcs1, serialization.NoEncryption())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


async def udp(world: World, query: dns.message.Message) -> dns.message.Message:
    host, port = world.dns_address
    return await dns.asyncquery.udp(query, host, timeout=5, port=port)


def resolver_for(world: World) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [world.dns_address[0]]
    resolver.port = world.dns_address[1]
    return resolver


def message(sender: str, recipient: str, subject: str = "Hello") -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@estafeta.test>"
    msg.set_content("A line of text.\n")
    return msg.as_bytes()


def signed(data: bytes, domain: str, private_key: bytes, selector: str = "s1") -> bytes:
    headers = [b"from", b"to", b"subject", b"message-id"]
    return dkim.sign(data, selector.encode(), domain.encode(), private_key, include_headers=headers) + data


async def mx_address(resolver: dns.asyncresolver.Resolver, domain: str) -> str:
    """Where a sender would connect for `domain`: the best MX's address, or the domain's A record."""
    try:
        answer = await resolver.resolve(domain, "MX")
        host = min(answer, key=lambda record: record.preference).exchange.to_text()
    except dns.resolver.NoAnswer:
        host = domain
    return (await resolver.resolve(host, "A"))[0].to_text()


async def send(world: World, address: str, sender: str, recipients: list[str], data: bytes) -> object:
    return await aiosmtplib.send(
        data,
        sender=sender,
        recipients=recipients,
        hostname=address,
        port=world.smtp_port,
        start_tls=True,
        validate_certs=False,
    )


def nothing_listens(address: str, port: int) -> bool:
    """True if a new server could bind `address:port` (SO_REUSEADDR: only a listener stands in the way)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
        return True


class RawSMTP:
    """A bare SMTP dialogue, to see exactly what the server says and whether it hangs up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: str, port: int) -> RawSMTP:
        client = cls(*await asyncio.open_connection(address, port))
        assert (await client.reply()).startswith("220 ")
        assert (await client.command("EHLO client.test")).startswith("250")
        return client

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await self.reader.readline()).decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    async def command(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def transaction(self, sender: str, recipient: str, data: bytes) -> str:
        assert (await self.command(f"MAIL FROM:<{sender}>")).startswith("250")
        rcpt = await self.command(f"RCPT TO:<{recipient}>")
        if not rcpt.startswith("250"):
            return rcpt
        assert (await self.command("DATA")).startswith("354")
        self.writer.write(data + b".\r\n")
        return await self.reply()

    async def closed_by_server(self) -> bool:
        return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


# --- DNS ---------------------------------------------------------------------------------------


async def test_dns_answers_mx_a_txt_ptr_from_the_default_zone(world: World) -> None:
    resolver = resolver_for(world)
    mx = await resolver.resolve("gmail.test", "MX")
    assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, "gmail-smtp-in.l.gmail.test.")]
    assert mx.response.flags & dns.flags.AA
    assert [r.to_text() for r in await resolver.resolve("gmail-smtp-in.l.gmail.test", "A")] == ["127.0.0.11"]
    spf = await resolver.resolve("yahoo.test", "TXT")
    assert [r.strings for r in spf] == [(b"v=spf1 ip4:127.0.0.12 -all",)]
    dmarc = await resolver.resolve("_dmarc.outlook.test", "TXT")
    assert b"".join(dmarc[0].strings).startswith(b"v=DMARC1; p=reject")
    ptr = await resolver.resolve("11.0.0.127.in-addr.arpa", "PTR")
    assert [r.to_text() for r in ptr] == ["gmail-smtp-in.l.gmail.test."]
    platform = await resolver.resolve("1.0.0.127.in-addr.arpa", "PTR")
    assert [r.to_text() for r in platform] == ["mta.estafeta.test."]


async def test_dns_negative_answers(world: World) -> None:
    resolver = resolver_for(world)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("no-such-domain.test", "MX")
    with pytest.raises(dns.resolver.NoAnswer):  # known name, missing type
        await resolver.resolve("gmail.test", "AAAA")
    with pytest.raises(dns.resolver.NoAnswer):  # MX → A fallback case
        await resolver.resolve("nomx.test", "MX")
    refused = await udp(world, dns.message.make_query("example.com", "A"))
    assert refused.rcode() == dns.rcode.REFUSED
    nxdomain = await udp(world, dns.message.make_query("nope.test", "A"))
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN
    assert nxdomain.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in nxdomain.authority] == [dns.rdatatype.SOA]


async def test_dkim_key_published_with_zone_add_resolves_and_reads_back(
    world: World, rsa_key: tuple[bytes, str]
) -> None:
    record = rsa_key[1]
    assert len(record) > 255
    world.zone.add("s1._domainkey.acme.test", "TXT", record)
    answer = await resolver_for(world).resolve("s1._domainkey.acme.test", "TXT")
    assert [b"".join(r.strings).decode() for r in answer] == [record]
    assert all(len(part) <= 255 for part in answer[0].strings)
    assert world.zone.txt("s1._domainkey.acme.test") == [record]
    # The parent of a published name exists without data rather than being NXDOMAIN.
    with pytest.raises(dns.resolver.NoAnswer):
        await resolver_for(world).resolve("_domainkey.acme.test", "TXT")
    world.zone.remove("s1._domainkey.acme.test", "TXT")
    assert world.zone.txt("s1._domainkey.acme.test") == []
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver_for(world).resolve("s1._domainkey.acme.test", "TXT")


async def test_rfc_2136_updates_add_and_delete_records_of_the_worlds_zones(world: World) -> None:
    host, port = world.dns_address
    update = dns.update.UpdateMessage("test.")
    update.add("news.shop.test.", 300, "TXT", '"v=spf1 -all"', '"site-verification=1"')
    update.add("bounces.shop.test.", 300, "MX", "10 mta.estafeta.test.")
    assert (await dns.asyncquery.tcp(update, host, port=port, timeout=5)).rcode() == dns.rcode.NOERROR
    assert sorted(world.zone.txt("news.shop.test")) == ["site-verification=1", "v=spf1 -all"]
    answer = await resolver_for(world).resolve("bounces.shop.test", "MX")
    assert [r.to_text() for r in answer] == ["10 mta.estafeta.test."]

    update = dns.update.UpdateMessage("test.")
    update.delete("news.shop.test.", "TXT", '"v=spf1 -all"')  # one record
    update.delete("bounces.shop.test.")  # the name
    assert (await dns.asyncquery.tcp(update, host, port=port, timeout=5)).rcode() == dns.rcode.NOERROR
    assert world.zone.txt("news.shop.test") == ["site-verification=1"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver_for(world).resolve("bounces.shop.test", "MX")

    outside = dns.update.UpdateMessage("example.com.")
    outside.add("www.example.com.", 300, "A", "192.0.2.1")
    assert (await dns.asyncquery.tcp(outside, host, port=port, timeout=5)).rcode() == dns.rcode.NOTAUTH
    wrong_zone = dns.update.UpdateMessage("test.")
    wrong_zone.add("www.example.com.", 300, "A", "192.0.2.1")
    assert (await dns.asyncquery.tcp(wrong_zone, host, port=port, timeout=5)).rcode() == dns.rcode.NOTZONE
    conditional = dns.update.UpdateMessage("test.")
    conditional.present("news.shop.test.")
    conditional.add("news.shop.test.", 300, "A", "127.0.0.5")
    assert (await dns.asyncquery.tcp(conditional, host, port=port, timeout=5)).rcode() == dns.rcode.NOTIMP
    assert world.zone.txt("news.shop.test") == ["site-verification=1"]


async def test_large_answers_are_truncated_over_udp_and_served_over_tcp(world: World) -> None:
    for index in range(4):
        world.zone.add("big.test", "TXT", f"record {index} " + "x" * 400)
    query = dns.message.make_query("big.test", "TXT")
    over_udp = await udp(world, query)
    assert over_udp.flags & dns.flags.TC
    assert not over_udp.answer
    edns = dns.message.make_query("big.test", "TXT", use_edns=0, payload=4096)
    assert len((await udp(world, edns)).answer[0]) == 4
    over_tcp = await dns.asyncquery.tcp(query, world.dns_address[0], timeout=5, port=world.dns_address[1])
    assert len(over_tcp.answer[0]) == 4
    # A stock resolver retries over TCP by itself.
    assert len(await resolver_for(world).resolve("big.test", "TXT")) == 4


async def test_extra_zone_text_is_served(rsa_key: tuple[bytes, str]) -> None:
    extra = zone_line("s1._domainkey.acme.test", "TXT", rsa_key[1]) + "\nmx.acme 300 IN A 127.0.0.50\n"
    world = World(extra_zone=extra)
    await world.start()
    try:
        assert world.zone.txt("s1._domainkey.acme.test") == [rsa_key[1]]
        answer = await resolver_for(world).resolve("mx.acme.test", "A")
        assert [r.to_text() for r in answer] == ["127.0.0.50"]
    finally:
        await world.stop()


def test_describe_lists_every_provider_with_its_mx() -> None:
    world = World()
    rows = dict(world.describe())
    assert set(rows) == {provider.domain for provider in world.providers}
    assert {
        "gmail.test", "yahoo.test", "outlook.test", "bounce.test", "full.test",
        "greylist.test", "down.test", "nomx.test", "trap.test",
        "secure.test", "mxmismatch.test", "badcert.test", "ststesting.test", "reports.test",
        "hang.test", "reset.test", "badtls.test", "storm.test", "slow.test",
    } <= set(rows)  # fmt: skip
    assert rows["gmail.test"].startswith("gmail-smtp-in.l.gmail.test (127.0.0.11): ")


def test_addresses_outside_loopback_are_refused() -> None:
    with pytest.raises(ValueError):
        World(host_dns="10.0.0.1")
    world = World()
    with pytest.raises(ValueError):
        world.zone.add("example.com", "A", "127.0.0.1")


# --- Mailbox providers -----------------------------------------------------------------------


async def test_mx_servers_offer_starttls_size_8bitmime_smtputf8(world: World) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.12", port=world.smtp_port, start_tls=False)
    await smtp.connect()
    try:
        await smtp.ehlo()
        for extension in ("starttls", "size", "8bitmime", "smtputf8"):
            assert smtp.supports_extension(extension), extension
        await smtp.starttls(validate_certs=False)
        assert smtp.get_transport_info("sslcontext") is not None
    finally:
        await smtp.quit()


async def test_yahoo_accepts_and_records_the_message(world: World) -> None:
    resolver = resolver_for(world)
    address = await mx_address(resolver, "yahoo.test")
    assert address == "127.0.0.12"
    data = message("news@acme.test", "ann@yahoo.test")
    await send(world, address, "bounces+1@acme.test", ["ann@yahoo.test", "bob@yahoo.test"], data)
    [received] = world.received("yahoo.test")
    assert received.provider == "yahoo.test"
    assert received.mail_from == "bounces+1@acme.test"
    assert received.rcpt_to == ["ann@yahoo.test", "bob@yahoo.test"]
    assert received.data.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n")
    assert (received.peer, received.tls, received.dkim) == ("127.0.0.1", True, "none")
    stats = world.stats()["yahoo.test"]
    assert (stats.connections, stats.tls_sessions, stats.accepted) == (1, 1, 1)
    assert world.received("gmail.test") == []
    assert world.received() == [received]


async def test_internationalised_addresses_and_8bit_bodies_are_accepted(world: World) -> None:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "José <josé@acme.test>"
    msg["To"] = "jörg@outlook.test"
    msg["Subject"] = "Grüße"
    msg.set_content("Schöne Grüße\n", cte="8bit")
    await aiosmtplib.send(  # an EmailMessage: aiosmtplib asks for SMTPUTF8 when the addresses need it
        msg, hostname="127.0.0.13", port=world.smtp_port, start_tls=True, validate_certs=False
    )
    [received] = world.received("outlook.test")
    assert (received.mail_from, received.rcpt_to) == ("josé@acme.test", ["jörg@outlook.test"])
    assert "Schöne Grüße".encode() in received.data


async def test_gmail_rejects_unsigned_and_accepts_aligned_dkim(
    world: World, rsa_key: tuple[bytes, str]
) -> None:
    private_key, record = rsa_key
    world.zone.add("s1._domainkey.acme.test", "TXT", record)
    address = await mx_address(resolver_for(world), "gmail.test")
    unsigned = message("news@acme.test", "ann@gmail.test")
    with pytest.raises(aiosmtplib.SMTPDataError) as rejected:
        await send(world, address, "b@acme.test", ["ann@gmail.test"], unsigned)
    assert (rejected.value.code, rejected.value.message) == (
        550,
        "5.7.26 This mail has been blocked because the sender is unauthenticated.",
    )

    # d=acme.test signs for news@mail.acme.test too: the signer is a parent of the From domain.
    data = signed(message("News <news@mail.acme.test>", "ann@gmail.test", "Signed"), "acme.test", private_key)
    await send(world, address, "b@acme.test", ["ann@gmail.test"], data)
    [received] = world.received("gmail.test")
    assert received.dkim == "pass"
    assert received.tls

    stats = world.stats()["gmail.test"]
    assert (stats.accepted, stats.rejected_5xx, stats.dkim_pass, stats.dkim_fail) == (1, 1, 1, 0)


async def test_gmail_rejects_signatures_that_fail_or_do_not_align(
    world: World, rsa_key: tuple[bytes, str]
) -> None:
    private_key, record = rsa_key
    world.zone.add("s1._domainkey.other.test", "TXT", record)
    address = "127.0.0.11"
    unaligned = signed(message("news@acme.test", "ann@gmail.test", "Unaligned"), "other.test", private_key)
    tampered = signed(message("news@other.test", "ann@gmail.test", "Tampered"), "other.test", private_key)
    tampered = tampered.replace(b"A line of text.", b"A line of spam.")
    no_key = message("news@other.test", "ann@gmail.test", "No key")
    unknown_key = signed(no_key, "other.test", private_key, selector="s9")
    for data in (unaligned, tampered, unknown_key):
        with pytest.raises(aiosmtplib.SMTPDataError) as rejected:
            await send(world, address, "b@other.test", ["ann@gmail.test"], data)
        assert rejected.value.code == 550
    stats = world.stats()["gmail.test"]
    assert (stats.accepted, stats.rejected_5xx, stats.dkim_pass, stats.dkim_fail) == (0, 3, 0, 3)


async def test_any_aligned_signature_among_several_passes(world: World, rsa_key: tuple[bytes, str]) -> None:
    private_key, record = rsa_key
    world.zone.add("s1._domainkey.esp.test", "TXT", record)
    world.zone.add("s1._domainkey.acme.test", "TXT", record)
    data = message("news@acme.test", "ann@outlook.test")
    twice = signed(signed(data, "acme.test", private_key), "esp.test", private_key)  # esp.test on top
    await send(world, "127.0.0.13", "b@esp.test", ["ann@outlook.test"], twice)
    [received] = world.received("outlook.test")
    assert received.dkim == "pass"
    assert world.stats()["outlook.test"].dkim_pass == 1


async def test_gmail_rate_limit_replies_421_and_hangs_up() -> None:
    clock = ManualClock()
    world = World(gmail_rate_limit=2, clock=clock)
    await world.start()
    try:
        client = await RawSMTP.connect("127.0.0.11", world.smtp_port)
        data = message("news@acme.test", "ann@gmail.test")  # unsigned: past the limit it is still 550
        for _ in range(2):
            reply = await client.transaction("b@acme.test", "ann@gmail.test", data)
            assert reply.startswith("550 5.7.26")
        assert await client.transaction("b@acme.test", "ann@gmail.test", data) == RATE_LIMITED
        assert await client.closed_by_server()
        await client.close()

        clock.advance(1.0)
        client = await RawSMTP.connect("127.0.0.11", world.smtp_port)
        assert (await client.transaction("b@acme.test", "ann@gmail.test", data)).startswith("550 5.7.26")
        await client.close()
        stats = world.stats()["gmail.test"]
        assert (stats.connections, stats.throttled_421, stats.rejected_5xx) == (2, 1, 3)
    finally:
        await world.stop()


async def test_bounce_rejects_unknown_users_but_not_postmaster(world: World) -> None:
    address = await mx_address(resolver_for(world), "bounce.test")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(world, address, "b@acme.test", ["nobody@bounce.test"], message("a@acme.test", "x"))
    [error] = refused.value.recipients
    assert (error.code, error.message) == (
        550,
        "5.1.1 <nobody@bounce.test>: Recipient address rejected: User unknown in virtual mailbox table",
    )
    await send(world, address, "b@acme.test", ["postmaster@bounce.test"], message("a@acme.test", "pm"))
    assert [m.rcpt_to for m in world.received("bounce.test")] == [["postmaster@bounce.test"]]
    stats = world.stats()["bounce.test"]
    assert (stats.rejected_5xx, stats.accepted) == (1, 1)


async def test_full_mailbox_defers_once_then_accepts(world: World) -> None:
    address = await mx_address(resolver_for(world), "full.test")
    data = message("a@acme.test", "cat@full.test")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(world, address, "b@acme.test", ["cat@full.test"], data)
    [error] = refused.value.recipients
    assert (error.code, error.message) == (452, "4.2.2 <cat@full.test>: Mailbox full")
    await send(world, address, "b@acme.test", ["cat@full.test"], data)
    stats = world.stats()["full.test"]
    assert (stats.deferred_4xx, stats.accepted) == (1, 1)


async def test_greylist_defers_the_first_attempt_whatever_the_sender(world: World) -> None:
    address = await mx_address(resolver_for(world), "greylist.test")
    data = message("a@acme.test", "dan@greylist.test")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(world, address, "bounces+1@acme.test", ["dan@greylist.test"], data)
    [error] = refused.value.recipients
    assert (error.code, error.message) == (
        451,
        "4.7.1 <dan@greylist.test>: Recipient address rejected: Greylisted, try again later",
    )
    await send(world, address, "bounces+2@acme.test", ["dan@greylist.test"], data)  # a new VERP sender
    assert len(world.received("greylist.test")) == 1
    assert world.stats()["greylist.test"].deferred_4xx == 1


async def test_scripted_replies_come_first_then_normal_behaviour(world: World) -> None:
    world.script("Eve@Outlook.test", ["452 4.2.2 Mailbox full", "250", "550 5.1.1 Gone"])
    data = message("a@acme.test", "eve@outlook.test")
    codes = []
    for _ in range(4):
        try:
            await send(world, "127.0.0.13", "b@acme.test", ["eve@outlook.test"], data)
            codes.append(250)
        except aiosmtplib.SMTPRecipientsRefused as refused:
            codes.append(refused.recipients[0].code)
    assert codes == [452, 250, 550, 250]
    stats = world.stats()["outlook.test"]
    assert (stats.deferred_4xx, stats.rejected_5xx, stats.accepted) == (1, 1, 2)


async def test_scripted_421_closes_the_connection(world: World) -> None:
    world.script("eve@yahoo.test", ["421 4.7.0 Try again later, closing connection."])
    client = await RawSMTP.connect("127.0.0.12", world.smtp_port)
    data = message("a@acme.test", "eve@yahoo.test")
    reply = await client.transaction("b@acme.test", "eve@yahoo.test", data)
    assert reply == "421 4.7.0 Try again later, closing connection."
    assert await client.closed_by_server()
    await client.close()
    assert world.stats()["yahoo.test"].throttled_421 == 1


async def test_down_refuses_connections(world: World) -> None:
    address = await mx_address(resolver_for(world), "down.test")
    assert address == "127.0.0.17"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(address, world.smtp_port)


async def test_nomx_is_reached_through_its_a_record(world: World) -> None:
    address = await mx_address(resolver_for(world), "nomx.test")
    assert address == "127.0.0.18"
    await send(world, address, "b@acme.test", ["fay@nomx.test"], message("a@acme.test", "fay@nomx.test"))
    assert [m.rcpt_to for m in world.received("nomx.test")] == [["fay@nomx.test"]]


async def test_trap_accepts_silently_and_reset_forgets_everything(world: World) -> None:
    await send(world, "127.0.0.19", "b@acme.test", ["old@trap.test"], message("a@acme.test", "old@trap.test"))
    assert len(world.received("trap.test")) == 1
    world.script("someone@yahoo.test", ["550 5.1.1 Gone"])
    world.reset()
    assert world.received() == []
    assert all(stats.connections == 0 and stats.accepted == 0 for stats in world.stats().values())
    await send(world, "127.0.0.12", "b@acme.test", ["someone@yahoo.test"], message("a@acme.test", "someone"))
    assert world.stats()["yahoo.test"].accepted == 1


async def test_reset_forgets_greylisted_pairs(world: World) -> None:
    data = message("a@acme.test", "gil@greylist.test")
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await send(world, "127.0.0.16", "b@acme.test", ["gil@greylist.test"], data)
        world.reset()


async def test_stop_drops_open_sessions_and_frees_the_port() -> None:
    world = World()
    await world.start()
    client = await RawSMTP.connect("127.0.0.12", world.smtp_port)
    port = world.smtp_port
    assert not nothing_listens("127.0.0.12", port)
    await world.stop()
    assert await client.closed_by_server()
    await client.close()
    assert nothing_listens("127.0.0.12", port)


async def test_received_keeps_the_newest_messages_and_counts_them_all() -> None:
    world = World(capacity=2)
    await world.start()
    try:
        for name in ("one", "two", "three"):
            recipient = f"{name}@trap.test"
            await send(world, "127.0.0.19", "b@acme.test", [recipient], message("a@acme.test", recipient))
        assert [m.rcpt_to for m in world.received()] == [["two@trap.test"], ["three@trap.test"]]
        assert world.stats()["trap.test"].accepted == 3
    finally:
        await world.stop()


async def test_serve_forever_serves_until_cancelled_then_stops() -> None:
    world = World()
    await world.start()
    serving = asyncio.create_task(world.serve_forever())
    answer = await resolver_for(world).resolve("trap.test", "MX")
    assert answer[0].exchange.to_text() == "mx.trap.test."
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert nothing_listens("127.0.0.19", world.smtp_port)


# --- Running beside other code ---------------------------------------------------------------------


def test_world_thread_serves_blocking_clients() -> None:
    with WorldThread(World()) as world:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [world.dns_address[0]]
        resolver.port = world.dns_address[1]
        assert resolver.resolve("outlook.test", "MX")[0].exchange.to_text() == (
            "outlook-com.olc.protection.outlook.test."
        )
        with smtplib.SMTP("127.0.0.13", world.smtp_port) as client:
            client.starttls()
            client.sendmail("b@acme.test", ["gus@outlook.test"], message("a@acme.test", "gus@outlook.test"))
        [received] = world.received("outlook.test")
        assert received.tls
        port = world.smtp_port
        assert not nothing_listens("127.0.0.13", port)
    assert nothing_listens("127.0.0.13", port)


def test_world_process_starts_serves_and_stops(rsa_key: tuple[bytes, str]) -> None:
    private_key, record = rsa_key
    handle = start_world_process(extra_zone=zone_line("s1._domainkey.acme.test", "TXT", record))
    try:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [handle.dns_address[0]]
        resolver.port = handle.dns_address[1]
        txt = resolver.resolve("s1._domainkey.acme.test", "TXT")
        assert b"".join(txt[0].strings).decode() == record
        with smtplib.SMTP("127.0.0.11", handle.smtp_port) as client:
            client.starttls()
            data = signed(message("news@acme.test", "hal@gmail.test"), "acme.test", private_key)
            client.sendmail("b@acme.test", ["hal@gmail.test"], data)
        stats = handle.stats()["gmail.test"]
        assert (stats.accepted, stats.dkim_pass, stats.tls_sessions) == (1, 1, 1)
    finally:
        handle.stop()
    assert nothing_listens("127.0.0.11", handle.smtp_port)


def test_world_process_reports_a_failed_start() -> None:
    with pytest.raises(RuntimeError, match="world process failed to start"):
        start_world_process(extra_zone="this is not a zone line\n")
