"""The SMTP relay with real clients (smtplib, swaks): TLS, AUTH, no open relay, limits, durable accept."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import re
import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from estafeta.accept import GroupCommit, store_batch
from estafeta.audit import SYSTEM, Actor
from estafeta.bench.submission import Refused, Submission
from estafeta.cli import app as cli_app
from estafeta.clock import ManualClock
from estafeta.config import DomainSettings
from estafeta.core import Core
from estafeta.delivery.pipelining import message_data
from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings
from estafeta.store import accounts as account_store
from estafeta.store import events as events_store
from estafeta.store import messages as message_store
from estafeta.store import queue as queue_store
from estafeta.store import reputation as reputation_store
from estafeta.store.db import Database
from estafeta.world import World
from tests.factories import add_sender, new_message

HOST = "127.0.0.1"
SIMPLE = (
    b"From: Acme <hello@acme.test>\r\n"
    b"To: ana@gmail.test\r\n"
    b"Subject: Order shipped\r\n"
    b"\r\n"
    b"Your order is on its way.\r\n"
)


@dataclass
class Relay:
    platform: Platform
    clock: ManualClock
    world: World
    account_id: int
    username: str
    password: str
    api_token: str
    cert: Path

    @property
    def starttls_port(self) -> int:
        assert self.platform.smtp_ports is not None
        return self.platform.smtp_ports.starttls

    @property
    def implicit_port(self) -> int:
        assert self.platform.smtp_ports is not None
        return self.platform.smtp_ports.implicit_tls

    def tls(self) -> ssl.SSLContext:
        """A client context that verifies the relay's self-signed certificate (issued for 127.0.0.1)."""
        return ssl.create_default_context(cafile=str(self.cert))

    def connect(self) -> smtplib.SMTP:
        """A session on the submission port, TLS negotiated, not logged in."""
        client = smtplib.SMTP(HOST, self.starttls_port, timeout=30)
        client.starttls(context=self.tls())
        return client

    def login(self) -> smtplib.SMTP:
        client = self.connect()
        client.login(self.username, self.password)
        return client

    def stored(self, message_id: str) -> tuple[message_store.MessageView, bytes]:
        """Read the message through a separate connection: what is there has been committed."""
        db = Database(self.platform.settings.database_url)
        try:
            view = db.call(message_store.get_message, self.account_id, message_id)
            raw = db.call(message_store.get_raw, self.account_id, message_id)
        finally:
            db.close()
        assert view is not None and raw is not None
        return view, raw

    def dkim_valid(self, raw: bytes) -> bool:
        def lookup(name: bytes, timeout: int = 5) -> bytes:
            return "".join(self.world.zone.txt(name.decode().rstrip("."))).encode()

        return bool(dkim.verify(raw, dnsfunc=lookup))


StartRelay = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def start_relay(fresh_world: World, tmp_path: Path) -> AsyncIterator[StartRelay]:
    """Start a platform with the relay on free loopback ports; keyword arguments override `smtp` settings."""
    platforms: list[Platform] = []

    async def start(*, deliver: bool = False, **smtp: Any) -> Relay:
        clock = ManualClock()
        settings = sandbox_settings(
            tmp_path / f"relay{len(platforms)}.db",
            fresh_world.dns_address,
            fresh_world.smtp_port,
            delivery={"poll_interval": 0.05, "idle_timeout": 0.5},
            smtp={
                "host": HOST,
                "starttls_port": 0,
                "implicit_tls_port": 0,
                "tls_dir": tmp_path / "tls",
                **smtp,
            },
        )
        platform = Platform(settings, clock)
        sender = await add_sender(platform.core, "acme", "acme.test")  # published in the world, verified
        await add_sender(platform.core, "globex", "globex.test", algorithm="ed25519-sha256")
        token = sender.token
        credential = await platform.core.smtp_credentials.create(sender.account_id, actor=SYSTEM)
        await platform.start(api=True, delivery=deliver, smtp=True)
        platforms.append(platform)
        return Relay(
            platform,
            clock,
            fresh_world,
            sender.account_id,
            credential.username,
            credential.password,
            token,
            tmp_path / "tls" / "smtp-cert.pem",
        )

    yield start
    for platform in platforms:
        await platform.stop(grace=2)


@pytest.fixture
async def relay(start_relay: StartRelay) -> Relay:
    return await start_relay()


def _queued_id(reply: tuple[int, bytes]) -> str:
    code, text = reply
    assert code == 250, reply
    assert text.startswith(b"2.0.0 Ok: queued as msg_"), reply
    return text.rsplit(b" ", 1)[1].decode()


def _send_raw(client: smtplib.SMTP, sender: str, recipients: list[str], raw: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT..., DATA; returns the reply to the end of DATA."""
    assert client.mail(sender)[0] == 250
    for rcpt in recipients:
        assert client.rcpt(rcpt)[0] == 250
    return client.data(raw)


@contextlib.contextmanager
def _session(factory: Callable[[], smtplib.SMTP]) -> Iterator[smtplib.SMTP]:
    client = factory()
    try:
        yield client
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()


# -- no open relay ---------------------------------------------------------------------------------


async def test_auth_is_offered_only_after_tls_and_required_before_mail(relay: Relay) -> None:
    def scenario() -> None:
        with _session(lambda: smtplib.SMTP(HOST, relay.starttls_port, timeout=30)) as plain:
            plain.ehlo()
            assert plain.has_extn("starttls") and not plain.has_extn("auth")
            assert plain.mail("hello@acme.test") == (530, b"5.7.0 Must issue a STARTTLS command first")
            code, _ = plain.docmd("AUTH", "PLAIN AGhlbGxvAHNlY3JldA==")
            assert code == 530
            plain.starttls(context=relay.tls())
            plain.ehlo()
            assert plain.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
            assert plain.has_extn("size") and plain.has_extn("smtputf8") and plain.has_extn("8bitmime")
            assert plain.mail("hello@acme.test") == (530, b"5.7.0 Authentication required")
            assert plain.rcpt("ana@gmail.test") == (530, b"5.7.0 Authentication required")
            assert plain.docmd("DATA")[0] == 530

    await asyncio.to_thread(scenario)
    assert await relay.platform.core.db.run(queue_store.state_counts) == {}


def _reply(connection: socket.socket | ssl.SSLSocket) -> bytes:
    """One whole reply (every line of a multi-line one), read without reading past it."""
    received = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", received):
        chunk = connection.recv(1)
        assert chunk, f"connection closed after {received!r}"
        received += chunk
    return received


async def test_what_was_sent_in_clear_text_with_starttls_is_discarded(relay: Relay) -> None:
    """RFC 3207: commands that came before TLS began are not taken as said over TLS (the STARTTLS command
    injection attack), the session starts afresh, and TLS cannot be started twice."""

    def scenario() -> list[bytes]:
        with socket.create_connection((HOST, relay.starttls_port), timeout=30) as plain:
            assert _reply(plain).startswith(b"220 ")
            plain.sendall(b"EHLO client.test\r\n")
            assert b"STARTTLS" in _reply(plain)
            plain.sendall(b"STARTTLS\r\nNOOP\r\n")
            assert _reply(plain).startswith(b"220 ")
            with relay.tls().wrap_socket(plain, server_hostname=HOST) as secure:
                secure.sendall(b"MAIL FROM:<hello@acme.test>\r\n")
                replies = [_reply(secure)]
                for command in (b"EHLO client.test", b"STARTTLS", b"QUIT"):
                    secure.sendall(command + b"\r\n")
                    replies.append(_reply(secure))
                return replies

    mail, ehlo, starttls, quit_ = await asyncio.to_thread(scenario)
    assert mail == b"503 5.5.1 Error: send HELO first\r\n"  # not NOOP's 250: the session began anew
    assert b"AUTH" in ehlo and b"STARTTLS" not in ehlo
    assert starttls == b"503 5.5.1 TLS already active\r\n"
    assert quit_.startswith(b"221 ")


async def test_pipelined_commands_are_answered_in_order(relay: Relay) -> None:
    """RFC 2920: a client that saw PIPELINING sends a transaction's commands without waiting; each gets its
    reply in order, DATA included, and a refused MAIL leaves the rest of its group refused, not run."""
    token = base64.b64encode(f"\0{relay.username}\0{relay.password}".encode())

    def scenario() -> list[bytes]:
        with socket.create_connection((HOST, relay.starttls_port), timeout=30) as plain:
            assert _reply(plain).startswith(b"220 ")
            plain.sendall(b"EHLO client.test\r\n")
            assert b"250-PIPELINING\r\n" in _reply(plain)
            plain.sendall(b"STARTTLS\r\n")
            assert _reply(plain).startswith(b"220 ")
            with relay.tls().wrap_socket(plain, server_hostname=HOST) as secure:
                secure.sendall(b"EHLO client.test\r\nAUTH PLAIN " + token + b"\r\n")
                assert b"250-PIPELINING\r\n" in _reply(secure)
                assert _reply(secure).startswith(b"235 ")
                secure.sendall(
                    b"MAIL FROM:<ceo@globex.test>\r\nRCPT TO:<ana@gmail.test>\r\nDATA\r\n"
                    b"RSET\r\nMAIL FROM:<hello@acme.test>\r\nRCPT TO:<ana@gmail.test>\r\nDATA\r\n"
                )
                replies = [_reply(secure) for _ in range(7)]
                secure.sendall(SIMPLE + b".\r\nNOOP\r\nQUIT\r\n")
                return replies + [_reply(secure) for _ in range(3)]

    replies = [reply[:3] for reply in await asyncio.to_thread(scenario)]
    assert replies == [b"550", b"503", b"503", b"250", b"250", b"250", b"354", b"250", b"250", b"221"]
    assert await relay.platform.core.db.run(queue_store.state_counts) == {"queued": 1}


async def test_wrong_or_unknown_credentials_are_refused(relay: Relay) -> None:
    def scenario() -> None:
        for username, password in ((relay.username, "wrong"), ("smtp_nobody", relay.password)):
            with _session(relay.connect) as client, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login(username, password)
            assert refused.value.smtp_code == 535
            assert refused.value.smtp_error.startswith(b"5.7.8")

    await asyncio.to_thread(scenario)


async def test_repeated_failed_logins_lock_the_client_out_for_a_while(start_relay: StartRelay) -> None:
    relay = await start_relay(max_login_failures=3, login_failure_window=600)

    def plain(client: smtplib.SMTP, password: str) -> tuple[int, bytes]:
        token = base64.b64encode(f"\0{relay.username}\0{password}".encode()).decode()
        return client.docmd("AUTH", f"PLAIN {token}")

    def scenario() -> list[tuple[int, bytes]]:
        with _session(relay.connect) as client:
            client.ehlo()
            return [plain(client, "guess") for _ in range(3)] + [plain(client, relay.password)]

    *guesses, locked = await asyncio.to_thread(scenario)
    assert [code for code, _ in guesses] == [535, 535, 535]
    assert locked[0] == 454 and locked[1].startswith(b"4.7.0"), locked  # even the right password
    relay.clock.advance(601)  # the failures leave the window

    def again() -> tuple[int, bytes]:
        with _session(relay.connect) as client:
            client.ehlo()
            return plain(client, relay.password)

    assert (await asyncio.to_thread(again))[0] == 235


async def test_sender_domains_the_account_does_not_own_are_refused(relay: Relay) -> None:
    def scenario() -> None:
        with _session(relay.login) as client:
            for sender in ("ceo@globex.test", "ceo@unregistered.test"):
                code, text = client.mail(sender)
                assert (code, text[:5]) == (550, b"5.7.1"), (sender, text)
                assert b"not a sending domain of this account" in text
            client.rset()
            # the envelope is the account's, but the From header someone else's
            spoofed = SIMPLE.replace(b"From: Acme <hello@acme.test>", b"From: Globex CEO <ceo@globex.test>")
            code, text = _send_raw(client, "hello@acme.test", ["ana@gmail.test"], spoofed)
            assert (code, text[:5]) == (550, b"5.7.1"), text
            assert b"globex.test" in text

    await asyncio.to_thread(scenario)
    assert await relay.platform.core.db.run(queue_store.state_counts) == {}


# -- the accept path ---------------------------------------------------------------------------------


async def test_data_is_answered_after_the_message_is_queued_signed_and_logged(relay: Relay) -> None:
    def scenario() -> tuple[str, str]:
        with _session(relay.login) as client:
            first = _queued_id(
                _send_raw(client, "hello@acme.test", ["ana@gmail.test", "ana@GMAIL.TEST"], SIMPLE)
            )
            second = _queued_id(_send_raw(client, "hello@acme.test", ["bob@yahoo.test"], SIMPLE))
            return first, second

    first, second = await asyncio.to_thread(scenario)
    assert first != second
    view, raw = relay.stored(first)
    assert view.source == "smtp" and view.stream == "transactional" and view.from_address == "hello@acme.test"
    assert [(r.recipient, r.state) for r in view.recipients] == [("ana@gmail.test", "queued")]
    assert [e.type for e in view.events] == ["accepted", "queued"]
    assert raw.startswith(b"DKIM-Signature: ") and relay.dkim_valid(raw)
    parsed = email.message_from_bytes(raw, policy=policy.SMTP)
    # the message keeps its own headers and body, and gains the Date and Message-ID it lacked
    assert parsed["Subject"] == "Order shipped" and parsed["To"] == "ana@gmail.test"
    assert parsed["Message-ID"] == view.message_id_header and view.message_id_header.endswith("@acme.test>")
    assert parsed["Date"] is not None
    assert raw.endswith(SIMPLE[SIMPLE.index(b"\r\n\r\n") :])


async def test_a_shortened_link_in_relayed_mail_holds_it_for_review(relay: Relay) -> None:
    raw = (
        b"From: Acme <hello@acme.test>\r\nTo: ana@gmail.test\r\nSubject: Your offer\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p>See <a href="https://bit.ly/3xYz">our offer</a></p>\r\n'
    )

    def scenario() -> tuple[int, bytes]:
        with _session(relay.login) as client:
            return _send_raw(client, "hello@acme.test", ["ana@gmail.test"], raw)

    code, text = await asyncio.to_thread(scenario)
    assert code == 250 and b"held for review" in text and b"bit.ly" in text, text
    message_id = text.split()[2].decode()
    view, _ = relay.stored(message_id)
    assert [(r.recipient, r.state) for r in view.recipients] == [("ana@gmail.test", "held")]
    db = Database(relay.platform.settings.database_url)
    try:
        review = db.call(reputation_store.open_review, relay.account_id)
    finally:
        db.close()
    assert review is not None and message_id in review.reason and "bit.ly" in review.reason


async def test_own_message_id_and_date_are_kept(relay: Relay) -> None:
    raw = SIMPLE.replace(
        b"Subject:",
        b"Message-ID: <order-1@shop.acme.test>\r\nDate: Tue, 3 Mar 2026 10:00:00 +0100\r\nSubject:",
    )

    def scenario() -> str:
        with _session(relay.login) as client:
            return _queued_id(_send_raw(client, "hello@acme.test", ["ana@gmail.test"], raw))

    view, stored = relay.stored(await asyncio.to_thread(scenario))
    assert view.message_id_header == "<order-1@shop.acme.test>"
    assert stored.count(b"Message-ID:") == 1 and b"Date: Tue, 3 Mar 2026 10:00:00 +0100\r\n" in stored


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"To: ana@gmail.test\r\nSubject: no author\r\n\r\nbody\r\n", b"headers.From"),
        (SIMPLE.replace(b"Subject: Order shipped", b"Subject: one\r\nSubject: two"), b"headers.Subject"),
        (SIMPLE.replace(b"Subject: Order shipped", b"this is not a header"), b"not a header field"),
        (SIMPLE.replace(b"To: ana@gmail.test", b"Date: yesterday"), b"headers.Date"),
    ],
)
async def test_messages_that_break_rfc_5322_get_a_clear_5_6_0(
    relay: Relay, raw: bytes, reason: bytes
) -> None:
    def scenario() -> tuple[int, bytes]:
        with _session(relay.login) as client:
            return _send_raw(client, "hello@acme.test", ["ana@gmail.test"], raw)

    code, text = await asyncio.to_thread(scenario)
    assert (code, text[:5]) == (550, b"5.6.0"), text
    assert reason in text
    assert await relay.platform.core.db.run(queue_store.state_counts) == {}


async def test_a_desktop_client_message_with_attachments_and_non_ascii_headers(relay: Relay) -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    png = b"\x89PNG\r\n\x1a\n" + bytes(reversed(range(256))) * 8
    message = EmailMessage()
    message["From"] = "Zoë Åström <hello@acme.test>"
    message["To"] = "José Núñez <jose@gmail.test>, ana@yahoo.test"
    message["Cc"] = "Émile <emile@outlook.test>"
    message["Bcc"] = "audit@outlook.test"
    message["Subject"] = "Grüße — Rechnung Nr. 42 für März 📎"
    message["Message-ID"] = "<thunderbird-1234@acme.test>"
    message["User-Agent"] = "Mozilla Thunderbird"
    message.set_content("Hallo José,\n\nanbei die Rechnung für März.\n\nZoë\n")
    message.add_alternative("<p>Hallo José,</p><p>anbei die Rechnung für <b>März</b>.</p>", subtype="html")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="Rechnung-März.pdf")
    message.add_attachment(png, maintype="image", subtype="png", filename="logo.png")

    def scenario() -> dict[str, tuple[int, bytes]]:
        with _session(relay.login) as client:
            return client.send_message(message)  # type: ignore[return-value]

    refused = await asyncio.to_thread(scenario)
    assert refused == {}
    events = await relay.platform.core.db.run(
        events_store.list_events, events_store.EventFilter(relay.account_id), 50
    )
    message_id = events[0].message_id
    assert message_id is not None
    view, raw = relay.stored(message_id)
    assert sorted(r.recipient for r in view.recipients) == [
        "ana@yahoo.test",
        "audit@outlook.test",
        "emile@outlook.test",
        "jose@gmail.test",
    ]
    assert view.message_id_header == "<thunderbird-1234@acme.test>"
    assert b"\nBcc:" not in raw and b"audit@outlook.test" not in raw
    assert relay.dkim_valid(raw)
    stored = email.message_from_bytes(raw, policy=policy.default)
    assert stored["Subject"] == "Grüße — Rechnung Nr. 42 für März 📎"
    assert stored["From"].addresses[0].display_name == "Zoë Åström"
    assert stored["To"].addresses[0].display_name == "José Núñez"
    assert stored["User-Agent"] == "Mozilla Thunderbird"
    body = stored.get_body(preferencelist=("html",))
    assert body is not None and "März" in body.get_content() and "/t/o/" in body.get_content()  # tracked
    text = stored.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == "Hallo José,\n\nanbei die Rechnung für März.\n\nZoë\n"
    attachments = {part.get_filename(): part.get_content() for part in stored.iter_attachments()}
    assert attachments == {"Rechnung-März.pdf": pdf, "logo.png": png}


async def test_relayed_html_is_tracked_unless_signed_upstream(relay: Relay) -> None:
    tracked, signed = EmailMessage(), EmailMessage()
    for message in (tracked, signed):
        message["From"] = "hello@acme.test"
        message["To"] = "ana@gmail.test"
        message["Subject"] = "Your receipt"
        message.set_content("Thanks for your order.\n")
        message.add_alternative(
            '<p>Thanks for your <a href="https://acme.test/o/1">order</a>.</p>', subtype="html"
        )
    signed["DKIM-Signature"] = "v=1; a=rsa-sha256; d=acme.test; s=upstream; b=AAAA; bh=AAAA"
    sent_signed = signed.as_bytes(policy=policy.SMTP)

    def scenario() -> tuple[str, str]:
        with _session(relay.login) as client:
            first = _queued_id(
                _send_raw(client, "hello@acme.test", ["ana@gmail.test"], tracked.as_bytes(policy=policy.SMTP))
            )
            second = _queued_id(_send_raw(client, "hello@acme.test", ["ana@gmail.test"], sent_signed))
            return first, second

    first, second = await asyncio.to_thread(scenario)
    _, raw = relay.stored(first)
    assert relay.dkim_valid(raw)
    stored = email.message_from_bytes(raw, policy=policy.default)
    html = stored.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert 'href="https://acme.test/o/1"' in html  # transactional mail: opens tracked, clicks not
    (pixel,) = re.findall(r'src="(http://127\.0\.0\.1:\d+/t/o/[^"]+)"', html)
    plain = stored.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n") == "Thanks for your order.\n"
    async with httpx.AsyncClient() as browser:
        assert (
            await browser.get(pixel, headers={"User-Agent": "Mozilla/5.0 Firefox/128.0"})
        ).status_code == 200
    view, _ = relay.stored(first)
    assert "opened" in [e.type for e in view.events]
    _, raw = relay.stored(second)
    assert raw.endswith(sent_signed[sent_signed.index(b"\r\n\r\n") :])  # signed upstream: body untouched


async def test_non_ascii_addresses_need_smtputf8(relay: Relay) -> None:
    def scenario() -> str:
        with _session(relay.login) as client:
            client.command_encoding = "utf-8"  # what smtplib switches to when it sends SMTPUTF8 itself
            assert client.mail("hello@acme.test")[0] == 250
            code, text = client.rcpt("josé@gmail.test")
            assert (code, text[:5]) == (553, b"5.6.7"), text
            client.rset()
            assert client.mail("hello@acme.test", ["SMTPUTF8"])[0] == 250
            assert client.rcpt("josé@gmail.test")[0] == 250
            return _queued_id(client.data(SIMPLE))

    view, _ = relay.stored(await asyncio.to_thread(scenario))
    assert [r.recipient for r in view.recipients] == ["josé@gmail.test"]


async def test_implicit_tls_port_with_auth_login(relay: Relay) -> None:
    def scenario() -> str:
        with _session(
            lambda: smtplib.SMTP_SSL(HOST, relay.implicit_port, context=relay.tls(), timeout=30)
        ) as client:
            client.ehlo()
            assert not client.has_extn("starttls") and client.has_extn("auth")
            client.user, client.password = relay.username, relay.password
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235
            return _queued_id(_send_raw(client, "hello@acme.test", ["ana@gmail.test"], SIMPLE))

    view, _ = relay.stored(await asyncio.to_thread(scenario))
    assert view.source == "smtp"


async def test_relayed_mail_is_delivered_dkim_signed(start_relay: StartRelay) -> None:
    relay = await start_relay(deliver=True)

    def scenario() -> str:
        with _session(relay.login) as client:
            return _queued_id(_send_raw(client, "hello@acme.test", ["ana@gmail.test"], SIMPLE))

    message_id = await asyncio.to_thread(scenario)
    for _ in range(300):
        view, _ = relay.stored(message_id)
        if view.recipients[0].state == "delivered":
            break
        await asyncio.sleep(0.05)
    assert view.recipients[0].state == "delivered"
    (got,) = relay.world.received("gmail.test")
    assert got.dkim == "pass" and got.rcpt_to == ["ana@gmail.test"]
    assert b"Your order is on its way." in got.data


async def test_parallel_sessions_each_get_their_250_once_committed(relay: Relay) -> None:
    def session(number: int) -> list[str]:
        with _session(relay.login) as client:
            return [
                _queued_id(_send_raw(client, "hello@acme.test", [f"user{number}.{i}@gmail.test"], SIMPLE))
                for i in range(5)
            ]

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = await asyncio.gather(*(loop.run_in_executor(pool, session, n) for n in range(8)))
    ids = [message_id for per_session in replies for message_id in per_session]
    assert len(set(ids)) == 40
    for message_id in ids:
        view, _ = relay.stored(message_id)
        assert len(view.recipients) == 1 and view.recipients[0].state == "queued"


class _RecordingDatabase(Database):
    """A real database that remembers which store functions ran, one transaction each."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.transactions: list[int] = []

    def transaction(self, conn: Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if fn is store_batch:  # on the event loop's thread or the database thread alike
            self.transactions.append(len(args[0]))  # callers (entries) in the transaction
        return super().transaction(conn, fn, *args, **kwargs)


def _new_message(account_id: int, number: int) -> message_store.NewMessage:
    return new_message(
        f"msg_{number:026d}", account_id, [f"user{number}@gmail.test"], source="smtp", raw=SIMPLE
    )


async def test_concurrent_callers_share_a_transaction_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    db = _RecordingDatabase(f"sqlite:///{tmp_path / 'group.db'}")
    db.migrate()
    clock = ManualClock()
    account = db.call(account_store.create_account, "acme", clock.now())
    commits = GroupCommit(db)
    try:
        await asyncio.gather(*(commits.commit([_new_message(account.id, n)], clock.now()) for n in range(4)))
        assert db.transactions == [4]
        results = await asyncio.gather(
            commits.commit([_new_message(account.id, 10)], clock.now()),
            commits.commit([_new_message(999, 11)], clock.now()),  # no such account: a foreign key fails
            commits.commit([_new_message(account.id, 12)], clock.now()),
            return_exceptions=True,
        )
        assert isinstance(results[1], IntegrityError)
        assert [row.id for row in results[0]] == ["msg_" + "0" * 24 + "10"]  # type: ignore[union-attr]
        assert [row.id for row in results[2]] == ["msg_" + "0" * 24 + "12"]  # type: ignore[union-attr]
        assert db.transactions == [4, 3, 1, 1, 1]  # the shared one failed, then each was tried alone
        assert db.call(queue_store.state_counts) == {"queued": 6}
    finally:
        db.close()


# -- limits ------------------------------------------------------------------------------------------


async def test_message_size_limit_is_advertised_and_enforced(start_relay: StartRelay) -> None:
    relay = await start_relay(max_message_bytes=4096)
    big = SIMPLE + (b"y" * 76 + b"\r\n") * 60

    def scenario() -> None:
        with _session(relay.login) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "4096"
            assert client.mail("hello@acme.test", ["SIZE=5000"]) == (
                552,
                b"5.3.4 Message size exceeds fixed maximum message size",
            )
            client.rset()
            code, text = _send_raw(client, "hello@acme.test", ["ana@gmail.test"], big)
            assert (code, text[:5]) == (552, b"5.3.4"), text
            # the session goes on: a message within the limit is accepted
            _queued_id(_send_raw(client, "hello@acme.test", ["ana@gmail.test"], SIMPLE))

    await asyncio.to_thread(scenario)
    assert await relay.platform.core.db.run(queue_store.state_counts) == {"queued": 1}


async def test_recipients_per_message_are_limited(start_relay: StartRelay) -> None:
    relay = await start_relay(max_recipients=3)

    def scenario() -> str:
        with _session(relay.login) as client:
            assert client.mail("hello@acme.test")[0] == 250
            for i in range(3):
                assert client.rcpt(f"user{i}@gmail.test")[0] == 250
            assert client.rcpt("user3@gmail.test") == (
                452,
                b"4.5.3 Too many recipients, at most 3 per message",
            )
            return _queued_id(client.data(SIMPLE))

    view, _ = relay.stored(await asyncio.to_thread(scenario))
    assert [r.recipient for r in view.recipients] == [
        "user0@gmail.test",
        "user1@gmail.test",
        "user2@gmail.test",
    ]


async def test_sending_rate_per_account(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_per_second=1, rate_burst=2)

    def send(client: smtplib.SMTP) -> tuple[int, bytes]:
        code, text = client.mail("hello@acme.test")
        if code != 250:
            client.rset()
            return code, text
        assert client.rcpt("ana@gmail.test")[0] == 250
        return client.data(SIMPLE)

    def burst() -> list[tuple[int, bytes]]:
        with _session(relay.login) as client:
            return [send(client) for _ in range(3)]

    first = await asyncio.to_thread(burst)
    assert [code for code, _ in first] == [250, 250, 451]
    assert first[2][1].startswith(b"4.7.1 ")
    relay.clock.advance(1)
    again = await asyncio.to_thread(burst)
    assert [code for code, _ in again] == [250, 451, 451]


async def test_connections_per_client_address_are_limited(start_relay: StartRelay) -> None:
    relay = await start_relay(max_connections_per_ip=2)

    def scenario() -> None:
        first, second = relay.login(), relay.login()
        for connect in (  # both ports count the same connections
            lambda: smtplib.SMTP(HOST, relay.starttls_port, timeout=30),
            lambda: smtplib.SMTP_SSL(HOST, relay.implicit_port, context=relay.tls(), timeout=30),
        ):
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                connect()
            assert refused.value.smtp_code == 421
            assert refused.value.smtp_error.startswith(b"4.7.0 ")
        first.quit()
        # once the server has seen the first connection close, there is room again
        deadline = time.monotonic() + 10
        while True:
            try:
                third = relay.login()
                break
            except smtplib.SMTPConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        _queued_id(_send_raw(third, "hello@acme.test", ["ana@gmail.test"], SIMPLE))
        third.quit()
        second.quit()

    await asyncio.to_thread(scenario)


async def test_stopping_closes_sessions_with_421(relay: Relay) -> None:
    client = await asyncio.to_thread(relay.login)
    await relay.platform.smtp.stop(grace=2)
    code, text = await asyncio.to_thread(client.noop)
    assert (code, text[:5]) == (421, b"4.3.2")
    client.close()


# -- credentials -------------------------------------------------------------------------------------


async def test_credentials_through_the_api(relay: Relay) -> None:
    async with httpx.AsyncClient(
        base_url=relay.platform.api_url, headers={"Authorization": f"Bearer {relay.api_token}"}
    ) as api:
        created = await api.post("/v1/smtp-credentials")
        assert created.status_code == 201
        username, password = created.json()["username"], created.json()["password"]
        listed = (await api.get("/v1/smtp-credentials")).json()["data"]
        assert {c["username"] for c in listed} == {relay.username, username}
        assert all(set(c) == {"username", "created_at", "revoked_at"} for c in listed)

        def login() -> int:
            with _session(relay.connect) as client:
                try:
                    return client.login(username, password)[0]
                except smtplib.SMTPAuthenticationError as exc:
                    return exc.smtp_code

        assert await asyncio.to_thread(login) == 235
        assert (await api.delete(f"/v1/smtp-credentials/{username}")).status_code == 204
        assert await asyncio.to_thread(login) == 535  # at once, though the login was cached
        again = await api.delete(f"/v1/smtp-credentials/{username}")
        assert again.status_code == 404 and again.headers["content-type"] == "application/problem+json"
        anonymous = await api.get("/v1/smtp-credentials", headers={"Authorization": "Bearer est_x_y"})
        assert anonymous.status_code == 401


async def test_credentials_from_the_command_line(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTAFETA_DATABASE_URL", relay.platform.settings.database_url)
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, ["accounts", "smtp-credentials", "acme"])
    assert result.exit_code == 0, result.output
    fields = dict(
        line.strip().split(": ", 1)
        for line in result.output.splitlines()
        if line.strip().startswith(("user", "pass"))
    )

    def scenario() -> str:
        with _session(relay.connect) as client:
            client.login(fields["username"], fields["password"])
            return _queued_id(_send_raw(client, "hello@acme.test", ["ana@gmail.test"], SIMPLE))

    await asyncio.to_thread(scenario)


# -- swaks -------------------------------------------------------------------------------------------


async def _swaks(*args: str) -> tuple[int, str]:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.fail("swaks is not installed (apt-get install swaks; .ci/run does it)")
    process = await asyncio.create_subprocess_exec(
        swaks,
        "--server",
        HOST,
        "--from",
        "hello@acme.test",
        "--to",
        "ana@gmail.test",
        "--helo",
        "client.test",
        "--timeout",
        "30",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_swaks_submits_over_starttls_and_implicit_tls(relay: Relay) -> None:
    login = ("--auth-user", relay.username, "--auth-password", relay.password)
    code, output = await _swaks("--port", str(relay.starttls_port), "--tls", "--auth", "PLAIN", *login)
    assert code == 0, output
    assert "250 2.0.0 Ok: queued as msg_" in output
    code, output = await _swaks(
        "--port", str(relay.implicit_port), "--tls-on-connect", "--auth", "LOGIN", *login
    )
    assert code == 0, output
    assert "250 2.0.0 Ok: queued as msg_" in output
    assert await relay.platform.core.db.run(queue_store.state_counts) == {"queued": 2}


async def test_swaks_without_auth_is_refused(relay: Relay) -> None:
    code, output = await _swaks("--port", str(relay.starttls_port), "--tls")
    assert code != 0
    assert "530 5.7.0 Authentication required" in output
    code, output = await _swaks(
        "--port",
        str(relay.starttls_port),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        relay.username,
        "--auth-password",
        "wrong",
    )
    assert code != 0 and "535 5.7.8" in output
    assert await relay.platform.core.db.run(queue_store.state_counts) == {}


async def test_over_the_plan_the_relay_answers_452_and_the_api_429_naming_the_plan(relay: Relay) -> None:
    core = relay.platform.core
    await core.plans.create("Hobby", messages_per_day=2, actor=SYSTEM)
    await core.plans.assign(relay.account_id, "Hobby", Actor("test", "127.0.0.1"))

    def scenario() -> tuple[str, tuple[int, bytes]]:
        with _session(relay.login) as client:
            first = _queued_id(
                _send_raw(client, "hello@acme.test", ["ana@gmail.test", "bo@gmail.test"], SIMPLE)
            )
            return first, _send_raw(client, "hello@acme.test", ["cy@gmail.test"], SIMPLE)

    _, (code, text) = await asyncio.to_thread(scenario)
    assert code == 452 and text.startswith(b"4.5.3 ") and b"'Hobby' allows 2 messages per day" in text
    async with httpx.AsyncClient(
        base_url=relay.platform.api_url, headers={"Authorization": f"Bearer {relay.api_token}"}
    ) as api:
        refused = await api.post(
            "/v1/messages",
            json={"from": "hello@acme.test", "to": ["di@gmail.test"], "subject": "Hi", "text": "Hi"},
        )
        usage = (await api.get("/v1/usage")).json()
    assert refused.status_code == 429
    assert refused.json()["type"] == "/problems/plan-limit" and "Hobby" in refused.json()["detail"]
    assert usage["plan"]["name"] == "Hobby" and usage["plan"]["messages_per_day"] == 2
    assert usage["messages_today"] == 2 and usage["messages_this_month"] == 2
    assert await core.db.run(queue_store.state_counts) == {"queued": 2}


# -- logins and sessions that make no progress -------------------------------------------------------


def _plain(client: smtplib.SMTP, username: str, password: str) -> tuple[int, bytes]:
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
    return client.docmd("AUTH", f"PLAIN {token}")


def _from(source: str, relay: Relay) -> smtplib.SMTP:
    """A TLS session from another loopback address, as a client elsewhere on the network would be."""
    client = smtplib.SMTP(HOST, relay.starttls_port, timeout=30, source_address=(source, 0))
    client.starttls(context=relay.tls())
    client.ehlo()
    return client


async def test_failed_logins_are_counted_per_username_across_addresses(start_relay: StartRelay) -> None:
    relay = await start_relay(max_login_failures=10, max_login_failures_per_user=5, login_failure_window=600)
    other = await relay.platform.core.smtp_credentials.create(relay.account_id, actor=SYSTEM)

    def guesses() -> list[int]:
        codes = []
        for n in range(2, 7):  # five addresses, one guess each: no address reaches its own limit
            with _session(lambda n=n: _from(f"127.0.0.{n}", relay)) as client:
                codes.append(_plain(client, relay.username, f"guess{n}")[0])
        return codes

    assert await asyncio.to_thread(guesses) == [535] * 5

    def from_a_fresh_address() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with _session(lambda: _from("127.0.0.9", relay)) as client:
            locked = _plain(client, relay.username, relay.password)  # even the right password
            fine = _plain(client, other.username, other.password)  # other usernames are not affected
        return locked, fine

    locked, fine = await asyncio.to_thread(from_a_fresh_address)
    assert locked[0] == 454 and locked[1].startswith(b"4.7.0") and b"username" in locked[1], locked
    assert fine[0] == 235
    relay.clock.advance(601)  # the failures leave the window

    def later() -> int:
        with _session(lambda: _from("127.0.0.10", relay)) as client:
            return _plain(client, relay.username, relay.password)[0]

    assert await asyncio.to_thread(later) == 235


async def test_a_failed_login_takes_as_long_whether_the_username_exists_or_not(relay: Relay) -> None:
    """Both failures check an argon2 hash; compared with each other, not with a clock budget."""

    def failures() -> tuple[list[float], list[float]]:
        times: dict[str, list[float]] = {relay.username: [], "smtp_0123456789abcdef": []}
        with _session(relay.connect) as client:
            client.ehlo()
            for attempt in range(4):  # taken in turns, so that both see the same load on the machine
                for username, taken in times.items():
                    started = time.perf_counter()
                    assert _plain(client, username, f"wrong{attempt}")[0] == 535
                    taken.append(time.perf_counter() - started)
        known, unknown = times.values()
        return known, unknown

    known, unknown = await asyncio.to_thread(failures)
    assert sum(unknown) > 0.3 * sum(known), (unknown, known)


async def test_sessions_without_progress_are_closed_with_421(start_relay: StartRelay) -> None:
    relay = await start_relay(max_commands_without_progress=6)

    def idle_chatter() -> tuple[list[int], bytes, bool]:
        client = relay.login()  # EHLO before and after STARTTLS: two of the six
        codes = [client.noop()[0] for _ in range(4)]
        code, text = client.docmd("RSET")  # the seventh
        try:
            client.noop()
            still_open = True
        except (smtplib.SMTPServerDisconnected, OSError):
            still_open = False
        client.close()
        return [*codes, code], text, still_open

    codes, text, still_open = await asyncio.to_thread(idle_chatter)
    assert codes == [250] * 4 + [421] and text.startswith(b"4.7.0") and not still_open

    def working_session() -> list[int]:
        with _session(relay.login) as client:
            codes = [client.noop()[0] for _ in range(4)]
            _queued_id(_send_raw(client, "hello@acme.test", ["ana@gmail.test"], SIMPLE))  # progress
            codes += [client.noop()[0] for _ in range(6)]
            codes.append(client.noop()[0])
        return codes

    assert await asyncio.to_thread(working_session) == [250] * 10 + [421]


async def test_an_idle_session_is_closed_with_421(start_relay: StartRelay) -> None:
    relay = await start_relay(idle_timeout=1)

    def idle() -> tuple[int, bytes]:
        client = relay.connect()
        time.sleep(3)
        try:
            return client.getreply()  # what the relay said before it closed
        finally:
            client.close()

    code, text = await asyncio.to_thread(idle)
    assert code == 421 and text.startswith(b"4.4.2"), (code, text)


async def test_replies_never_carry_what_the_client_sent_across_lines(relay: Relay) -> None:
    """Found by fuzzing: an unknown command with a bare CR in it came back inside the 500 reply."""

    def scenario() -> tuple[int, bytes]:
        with _session(relay.connect) as client:
            client.send(b"NO\rOP " + b"x" * 480 + b"\r\n")
            return client.getreply()

    code, text = await asyncio.to_thread(scenario)
    assert code == 500 and b"\r" not in text and len(text) <= 508, text


async def test_an_unverified_sending_domain_is_refused_at_mail_from_with_what_to_fix(relay: Relay) -> None:
    # Registered from a core that cannot publish records, as in production before the owner publishes them.
    settings = relay.platform.settings.model_copy(update={"domains": DomainSettings(dns_update=None)})
    core = Core(settings)
    try:
        await core.domains.add(relay.account_id, "late.test", "ed25519-sha256", actor=SYSTEM)
    finally:
        core.close()

    def mail_from(sender: str) -> tuple[int, bytes]:
        with _session(relay.login) as client:
            return client.mail(sender)

    code, reply = await asyncio.to_thread(mail_from, "news@late.test")
    assert code == 550 and reply.startswith(b"5.7.1 sending domain late.test is not verified yet: DKIM ")
    assert reply.endswith(b"run `estafeta domains verify late.test` or POST /v1/domains/late.test/verify")
    assert (await asyncio.to_thread(mail_from, "hello@acme.test"))[0] == 250


async def test_the_benchmark_client_submits_one_command_at_a_time(relay: Relay) -> None:
    """`bench smtp`'s own client (STARTTLS through the event loop, AUTH PLAIN, no pipelining) gets each
    message queued as sent, dot-stuffed lines included; a refusal leaves its session usable."""
    client = await Submission.open(HOST, relay.starttls_port, relay.tls(), relay.username, relay.password)
    dotted = SIMPLE + b".A line that starts with a dot\r\n..and one with two\r\n.\r\nno final line break"
    first = await client.send("hello@acme.test", "ana@gmail.test", message_data(dotted))
    with pytest.raises(Refused) as refused:
        await client.send("ceo@globex.test", "ana@gmail.test", message_data(SIMPLE))
    assert refused.value.code == 550
    second = await client.send("hello@acme.test", "bob@yahoo.test", message_data(SIMPLE))
    await client.quit()
    _, raw = relay.stored(_queued_id((250, first)))
    assert raw.endswith(dotted[dotted.index(b"\r\n\r\n") :] + b"\r\n")
    _, raw = relay.stored(_queued_id((250, second)))
    assert raw.endswith(SIMPLE[SIMPLE.index(b"\r\n\r\n") :])
