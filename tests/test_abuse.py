"""The abuse desk on a real database: what a report says, how it is matched to the sending account, what it
does to the account's reputation, and terminating an account."""

from __future__ import annotations

import asyncio
import base64
import quopri
import smtplib
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from sqlalchemy import Connection, select

from estafeta import verp
from estafeta.accept import Submission
from estafeta.audit import SYSTEM, Actor
from estafeta.bounces.abuse import read_report
from estafeta.bounces.inbound import InboundHandler, InboundListener, sending_network
from estafeta.clock import ManualClock
from estafeta.compose import Draft, parse_address
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.limits import MemoryLimits
from estafeta.reputation import ReviewError
from estafeta.store import feedback
from estafeta.store import queue as q
from estafeta.store import reputation as reputation_store
from estafeta.store import suppressions as suppression_store
from estafeta.store.models import Delivery, Event, Message
from estafeta.termination import TerminationError
from estafeta.world import World
from tests.factories import add_sender, sandbox_dns

PASTED = """Hello abuse team,

I never signed up for this and I keep getting it. Please make it stop.

-----Original Message-----
Return-Path: <{return_path}>
From: Acme <hello@acme.test>
Subject: Hello

Hello there.
"""


@pytest.fixture
async def core(db_url: str, dns_world: World) -> AsyncIterator[Core]:
    settings = Settings(
        database_url=db_url,
        dkim_algorithm="ed25519-sha256",
        tracking={"base_url": "https://track.estafeta.test"},
        inbound={"platform_domains": ["estafeta.test"]},
        **sandbox_dns(dns_world),  # sending domains are verified in the world's DNS
    )
    core = Core(settings, clock=ManualClock())
    yield core
    core.close()


def _handler(core: Core) -> InboundHandler:
    return InboundHandler(
        core.db,
        core.settings,
        core.clock,
        core.verp_secret,
        after_complaint=core.reputation.after_complaint,
        abuse=core.abuse,
    )


async def _sent(
    core: Core, account_id: int, *recipients: str, domain: str = "acme.test"
) -> tuple[str, bytes, list[feedback.Target]]:
    """A message accepted through the real accept path: its id, signed bytes and queue entries."""
    draft = Draft(
        from_=parse_address(f"hello@{domain}"),
        to=[parse_address(r) for r in recipients],
        subject="Hello",
        text="Hello there.\n",
    )
    (accepted,) = await core.accepter.accept(account_id, [Submission(draft)])
    raw = core.db.call(lambda c: c.scalar(select(Message.raw).where(Message.id == accepted.id)))
    targets = core.db.call(feedback.message_targets, accepted.message_id_header)
    return accepted.id, raw, targets


async def _report(core: Core, raw: bytes, address: str = "abuse@estafeta.test") -> str:
    """Hand one message to the inbound listener's handler as mail to `address`."""
    handler = _handler(core)
    mailbox = handler.mailbox(address)
    assert mailbox is not None and mailbox.abuse
    return await handler.process(mailbox, raw, address)


def _human(text: str, subject: str = "Spam from your platform", attach: bytes | None = None) -> bytes:
    report = EmailMessage()
    report["From"] = "Jo Reader <jo@reader.test>"
    report["To"] = "abuse@estafeta.test"
    report["Subject"] = subject
    report.set_content(text)
    if attach is not None:  # forwarded as an attachment, as mail clients do
        report.add_attachment(message_from_bytes(attach, policy=policy.SMTP))
    return report.as_bytes()


def _events(core: Core, account_id: int, kind: str) -> list[Event]:
    def work(conn: Connection) -> list[Event]:
        query = select(Event).where(Event.account_id == account_id, Event.type == kind).order_by(Event.id)
        return list(conn.execute(query).all())  # type: ignore[arg-type]

    return core.db.call(work)


# -- reading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "category"),
    [
        ("This is a phishing mail pretending to be my bank.", "phishing"),
        ("The attachment is malware, my scanner flagged it.", "malware"),
        ("I never subscribed to this list.", "spam"),
        ("Please look into this sender.", "other"),
    ],
)
def test_the_reporters_words_decide_the_category_never_the_quoted_message(words: str, category: str) -> None:
    quoted = "> Dear customer, verify your password here to avoid a virus: https://x.test/\n> Spam-free!"
    found = read_report(
        _human(f"{words}\n\nOn Monday, Acme <hello@acme.test> wrote:\n{quoted}", subject="FYI")
    )
    assert found.category == category
    assert found.excerpt == words and found.reporter == "jo@reader.test"


def test_traces_are_read_from_pasted_headers_and_from_an_attached_original() -> None:
    pasted = PASTED.format(return_path="bounces+2s-0123456789@bounces.estafeta.test") + (
        "Message-ID: <m1@acme.test>\nFeedback-ID: 0:7:broadcast:estafeta\n"
        "DKIM-Signature: v=1; a=ed25519-sha256;\n d=Acme.test; s=sel; b=abc\n"
        "Click https://track.estafeta.test/t/c/eyJhIjoxfQ.abcdefgh now\n"
    )
    found = read_report(_human(pasted)).traces
    assert found.verp_tokens == ("2s-0123456789",)
    assert found.message_ids == ("<m1@acme.test>",)
    assert found.feedback_ids == ("0:7:broadcast:estafeta",)
    assert found.dkim_domains == ("acme.test",)
    assert found.tracking_tokens == (("click", "eyJhIjoxfQ.abcdefgh"),)
    original = b"Message-ID: <m2@acme.test>\r\nFeedback-ID: 0:9:x:estafeta\r\nSubject: s\r\n\r\nbody\r\n"
    attached = read_report(_human("Spam, attached.", attach=original)).traces
    assert attached.message_ids == ("<m2@acme.test>",) and attached.feedback_ids == ("0:9:x:estafeta",)


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_an_original_forwarded_encoded_still_gives_its_traces(encoding: str) -> None:
    """Webmail and some abuse desks forward the original base64 or quoted-printable encoded, which RFC 2046
    forbids for message/rfc822 but which is common; its headers are still read."""
    original = (
        b"Message-ID: <m3@acme.test>\r\nFeedback-ID: 0:11:x:estafeta\r\n"
        b"Subject: =?utf-8?q?Gro=C3=9Fe_Angebote?=\r\n\r\nbody = text\r\n"
    )
    wrapped = base64.encodebytes(original) if encoding == "base64" else quopri.encodestring(original)
    raw = (
        b"From: Jo Reader <jo@reader.test>\r\nTo: abuse@estafeta.test\r\nSubject: Spam\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nSpam, attached.\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: "
        + encoding.encode()
        + b"\r\n\r\n"
        + wrapped
        + b"\r\n--B--\r\n"
    )
    found = read_report(raw).traces
    assert found.message_ids == ("<m3@acme.test>",) and found.feedback_ids == ("0:11:x:estafeta",)


# -- routing -------------------------------------------------------------------------------------------


async def test_abuse_and_postmaster_of_each_platform_domain_are_mailboxes_and_nothing_else(
    core: Core,
) -> None:
    handler = _handler(core)
    for address in (
        "abuse@bounces.estafeta.test",
        "Postmaster@track.estafeta.test",
        "abuse@estafeta.test",
        "postmaster@ESTAFETA.test",
    ):
        mailbox = handler.mailbox(address)
        assert mailbox is not None and mailbox.abuse, address
    for address in (
        "abuse@acme.test",
        "root@estafeta.test",
        "abuse@evil.test",
        "webmaster@bounces.estafeta.test",
    ):
        assert handler.mailbox(address) is None, address


def test_senders_are_counted_by_network() -> None:
    assert sending_network("192.0.2.77") == "192.0.2.0/24"
    assert sending_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert sending_network("2001:db8:1:2:3::9") == "2001:db8:1:2::/64"
    assert sending_network("") == "unknown"


async def test_each_network_fills_the_abuse_mailboxes_only_so_fast(core: Core) -> None:
    """Over real SMTP: the third report within the hour from one network is deferred (a real server retries
    it), another network is unaffected, and an hour later the first may report again."""
    settings = core.settings.model_copy(
        update={
            "inbound": core.settings.inbound.model_copy(
                update={"port": 0, "starttls": False, "abuse_reports_per_hour": 2}
            )
        }
    )
    listener = InboundListener(
        core.db, settings, core.clock, core.verp_secret, abuse=core.abuse, limits=MemoryLimits(core.clock)
    )
    host, port = await listener.start()
    report = _human("This is spam, I never signed up.")

    def send(source: str) -> tuple[int, bytes]:
        with smtplib.SMTP(host, port, source_address=(source, 0), timeout=10) as client:
            client.ehlo("reporter.test")
            client.mail("jo@reader.test")
            answer = client.rcpt("abuse@estafeta.test")
            if answer[0] == 250:
                client.data(report)
            return answer

    try:
        for _ in range(2):
            assert (await asyncio.to_thread(send, "127.0.0.1"))[0] == 250
        code, text = await asyncio.to_thread(send, "127.0.0.9")  # the same /24
        assert (code, text[:5]) == (450, b"4.7.1"), text
        assert (await asyncio.to_thread(send, "127.0.1.1"))[0] == 250  # another network
        core.clock.advance(3600)  # type: ignore[attr-defined]
        assert (await asyncio.to_thread(send, "127.0.0.1"))[0] == 250
        assert len(await core.abuse.reports()) == 4  # the deferred one was not kept
    finally:
        await listener.stop(grace=1)


# -- matching ------------------------------------------------------------------------------------------


async def test_a_pasted_verp_return_path_matches_the_delivery_counts_and_opens_a_review(core: Core) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    message_id, _, (target,) = await _sent(core, sender.account_id, "jo@reader.test")
    return_path = verp.return_path(target.delivery_id, core.verp_secret, core.settings.return_path_domain)
    assert await _report(core, _human(PASTED.format(return_path=return_path))) == "matched by verp"
    (report,) = await core.abuse.reports()
    assert (report.account_id, report.message_id, report.recipient, report.category) == (
        sender.account_id,
        message_id,
        "jo@reader.test",
        "spam",
    )
    (event,) = _events(core, sender.account_id, "abuse_reported")
    assert event.recipient == "jo@reader.test" and event.data["report_id"] == report.id
    standing = await core.reputation.standing(sender.account_id)
    assert standing["metrics"]["abuse_reports"] == 1
    (review,) = await core.reputation.reviews()
    assert review.id == report.review_id and f"abuse report {report.id}: spam" in review.reason
    detail = await core.reputation.review(review.id)
    assert [r["id"] for r in detail["abuse_reports"]] == [report.id]
    assert "never signed up" in detail["abuse_reports"][0]["excerpt"]
    suppressed = core.db.call(suppression_store.get, sender.account_id, "jo@reader.test")
    assert suppressed is not None and suppressed.reason == "complaint"


async def test_an_attached_original_matches_by_message_id_and_phishing_pauses_everything(core: Core) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    message_id, raw, _ = await _sent(core, sender.account_id, "a@reader.test", "b@reader.test")
    report = _human("This is phishing, it imitates my bank's login page.", attach=raw)
    assert await _report(core, report, "abuse@bounces.estafeta.test") == "matched by message-id"
    (row,) = await core.abuse.reports(matched=True)
    assert (row.message_id, row.recipient, row.category) == (message_id, None, "phishing")
    (event,) = _events(core, sender.account_id, "abuse_reported")
    assert event.message_id == message_id and event.recipient is None
    standings = core.db.call(reputation_store.standings, sender.account_id)
    assert {s.state for s in standings.values()} == {"paused"}
    (review,) = await core.reputation.reviews()
    assert review.stream == "all" and review.reason.startswith("paused: abuse report")


@pytest.mark.parametrize("where", ["pasted text", "the attached original's HTML"])
async def test_a_signed_tracking_link_matches_the_message(core: Core, where: str) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    message_id, _, _ = await _sent(core, sender.account_id, "jo@reader.test")
    token = core.tracker.tokens.click_token(message_id, "jo@reader.test", "https://acme.test/x", 0)
    link = f"https://track.estafeta.test/t/c/{token}"
    if where == "pasted text":
        report = _human(f"Spam again.\n\n> Buy now: {link}\n")
    else:  # only the link says which message it was: no return path, no Message-ID
        html = f'Subject: Sale\r\nContent-Type: text/html\r\n\r\n<p><a href="{link}">Buy now</a></p>\r\n'
        report = _human("Spam again, attached.", attach=html.encode())
    assert await _report(core, report, "postmaster@track.estafeta.test") == "matched by tracking"
    (row,) = await core.abuse.reports()
    assert (row.account_id, row.message_id, row.recipient) == (
        sender.account_id,
        message_id,
        "jo@reader.test",
    )


async def test_claimed_traces_attach_a_review_but_count_nothing(core: Core) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    pasted = f"Phishing!\n\n> Feedback-ID: 0:{sender.account_id}:broadcast:estafeta\n"
    assert await _report(core, _human(pasted)) == "matched by feedback-id"
    dkim = "Spam.\n\n> DKIM-Signature: v=1; a=rsa-sha256; d=acme.test; s=x; b=y\n"
    assert await _report(core, _human(dkim)) == "matched by dkim"
    assert _events(core, sender.account_id, "abuse_reported") == []
    standings = core.db.call(reputation_store.standings, sender.account_id)
    assert {s.state for s in standings.values()} == {"active"}  # phishing, but unverified: not paused
    (review,) = await core.reputation.reviews()
    assert "unverified" in review.reason


async def test_forged_or_missing_traces_go_to_the_operators_inbox(core: Core) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    _, _, (target,) = await _sent(core, sender.account_id, "jo@reader.test")
    forged = f"bounces+{verp.make_token(target.delivery_id, b'not the secret')}@bounces.estafeta.test"
    for text in (PASTED.format(return_path=forged), "Spam.\n\n> Feedback-ID: 0:999:broadcast:estafeta\n"):
        assert await _report(core, _human(text)) == "unmatched"
    inbox = await core.abuse.reports(matched=False)
    assert len(inbox) == 2 and all(r.account_id is None for r in inbox)
    assert await core.reputation.reviews() == []
    kept = await core.abuse.report(inbox[0].id)
    assert kept is not None and kept[1].startswith(b"From: Jo Reader")


async def test_an_arf_report_to_abuse_is_a_complaint_counted_once(core: Core) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    _, raw, (target,) = await _sent(core, sender.account_id, "jo@reader.test")
    return_path = verp.return_path(target.delivery_id, core.verp_secret, core.settings.return_path_domain)
    boundary = "arf-boundary"
    arf = (
        (
            f"From: fbl@reader.test\r\nTo: abuse@estafeta.test\r\nSubject: FBL\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
            f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n"
            "Feedback-Type: abuse\r\nUser-Agent: test/1\r\nVersion: 1\r\n"
            "Original-Rcpt-To: <jo@reader.test>\r\n"
            f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{return_path}>\r\n"
        ).encode()
        + raw
        + f"\r\n--{boundary}--\r\n".encode()
    )
    assert await _report(core, arf) == "complaint"
    assert len(_events(core, sender.account_id, "complained")) == 1
    assert _events(core, sender.account_id, "abuse_reported") == []
    (row,) = await core.abuse.reports()
    assert (row.category, row.account_id, row.matched_by) == ("complaint", sender.account_id, "verp")


# -- termination ---------------------------------------------------------------------------------------


async def test_terminating_cancels_all_waiting_mail_and_refuses_the_account_afterwards(core: Core) -> None:
    sender = await add_sender(core, "acme", "acme.test")
    other = await add_sender(core, "globex", "globex.test")
    login = await core.smtp_credentials.create(sender.account_id, actor=SYSTEM)
    assert await core.api_keys.account_for(sender.token) == sender.account_id  # cached from now on
    await _sent(core, sender.account_id, "a@reader.test", "b@reader.test", "c@reader.test")
    await _sent(core, other.account_id, "a@reader.test", domain="globex.test")
    now = core.clock.now()
    leased = core.db.call(q.claim, "worker-1", now, now.replace(year=2030), 1)  # a worker holds one entry
    assert [j.account_id for j in leased] == [sender.account_id]
    await core.reputation.set_stream(
        sender.account_id, "broadcast", "paused", "looks bad", Actor("admin:x", "127.0.0.1")
    )

    done = await core.terminations.terminate(
        sender.account_id, Actor("admin:ops", "127.0.0.1"), "phishing kit"
    )
    assert (done["cancelled"], done["api_keys_revoked"], done["smtp_credentials_revoked"]) == (3, 1, 1)
    assert (done["by"], done["reason"], done["status"]) == ("admin:ops", "phishing kit", "terminated")
    states = core.db.call(
        lambda c: dict(
            c.execute(
                select(Delivery.account_id, Delivery.state).group_by(Delivery.account_id, Delivery.state)
            ).all()
        )
    )
    assert states == {sender.account_id: "cancelled", other.account_id: "queued"}
    assert len(_events(core, sender.account_id, "cancelled")) == 3  # one each, the leased one too
    # the worker's outcome for its leased entry no longer counts
    deferred = q.Finish(leased[0].delivery_id, "deferred", now, 421, "4.7.0 later", "deferred", {})
    assert core.db.call(q.finish, "worker-1", now, [deferred]) == 0
    assert [j.account_id for j in core.db.call(q.claim, "w2", now, now, 10)] == [other.account_id]
    assert await core.api_keys.account_for(sender.token) is None
    fresh = await core.api_keys.create(sender.account_id, "made after", actor=SYSTEM)
    assert await core.api_keys.account_for(fresh.token) is None
    assert await core.smtp_credentials.account_for(login.username, login.password) is None
    (review,) = await core.reputation.reviews(None)
    assert review.state == "rejected"
    with pytest.raises(ReviewError):
        await core.reputation.set_stream(
            sender.account_id, "broadcast", "active", "", Actor("admin:x", "127.0.0.1")
        )
    with pytest.raises(TerminationError) as again:
        await core.terminations.terminate(sender.account_id, Actor("admin:ops", "127.0.0.1"), "again")
    assert again.value.status == 409
    (event,) = _events(core, sender.account_id, "account_terminated")
    assert event.data["by"] == "admin:ops" and event.data["reason"] == "phishing kit"
    # a late report about it is kept with the account, but there is no review left to decide
    return_path = verp.return_path(leased[0].delivery_id, core.verp_secret, core.settings.return_path_domain)
    assert await _report(core, _human(PASTED.format(return_path=return_path))) == "matched by verp"
    assert await core.reputation.reviews() == []
