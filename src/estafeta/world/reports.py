"""What simulated providers mail back after accepting a message, as real ones do: a late non-delivery report
(RFC 3464, Microsoft style), a feedback-loop complaint (ARF, RFC 5965, Yahoo style), an out-of-office
reply (RFC 3834), and what people write to a sender's abuse desk: a complaint in their own words quoting the
message, or the message forwarded as an attachment.

Reports go to the return path of the original (the complaint to the feedback-loop address of its domain,
the people's reports to abuse@ it),
delivered with aiosmtplib to the address given to `World.report_to`; until then nothing is sent. Delivery is
tried a few times, a moment apart, while nothing listens there; a refusal ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.utils import format_datetime

import aiosmtplib

from estafeta.world.providers import Provider
from estafeta.world.receivers import Received

log = logging.getLogger("estafeta.world")

REPORT_DELAY = 0.05  # seconds between acceptance and the report, "shortly after"
ATTEMPTS = 5
RETRY_PAUSE = 0.2  # doubled after each failed attempt
FBL_LOCAL_PART = "fbl"
ABUSE_LOCAL_PART = "abuse"
FBL_SENDER = "feedback@arf.mail.yahoo.test"

_BOUNDARIES = itertools.count(1)


def _headers(original: bytes) -> bytes:
    """The original's header section, CRLF-terminated."""
    end = original.find(b"\r\n\r\n")
    return original if end < 0 else original[: end + 2]


def _header(original: bytes, name: str) -> str:
    value = BytesHeaderParser().parsebytes(_headers(original)).get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _multipart_report(report_type: str, head: list[str], parts: list[tuple[str, bytes]]) -> bytes:
    boundary = f"=_estafeta_world_report_{next(_BOUNDARIES)}"
    lines = [
        *head,
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"',
        "",
        "This is a MIME-formatted message.",
    ]
    out = "\r\n".join(lines).encode() + b"\r\n"
    for content_type, body in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        out += body.rstrip(b"\r\n") + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _crlf(text: str) -> bytes:
    return "\r\n".join(text.splitlines()).encode() + b"\r\n"


def non_delivery_report(mx_host: str, recipient: str, received: Received) -> bytes:
    """An Exchange Online-style NDR: 5.1.1, the recipient was not found, sent after acceptance."""
    domain = recipient.rpartition("@")[2]
    subject = _header(received.data, "Subject")
    head = [
        f"From: Microsoft Outlook <postmaster@{domain}>",
        f"To: <{received.mail_from}>",
        f"Subject: Undeliverable: {subject}",
        f"Date: {format_datetime(received.received_at)}",
        f"Message-ID: <ndr-{next(_BOUNDARIES)}@{mx_host}>",
        "Auto-Submitted: auto-replied",
    ]
    human = _crlf(
        f"Your message to {recipient} couldn't be delivered.\n\n"
        f"{recipient.partition('@')[0]} wasn't found at {domain}.\n\n"
        "Remote server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'"
    )
    status = _crlf(
        f"Reporting-MTA: dns;{mx_host}\n"
        f"Received-From-MTA: dns;{mx_host}\n"
        f"Arrival-Date: {format_datetime(received.received_at)}\n"
        "\n"
        f"Final-Recipient: rfc822;{recipient}\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Diagnostic-Code: smtp;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"
    )
    return _multipart_report(
        "delivery-status",
        head,
        [
            ("text/plain; charset=us-ascii", human),
            ("message/delivery-status", status),
            ("text/rfc822-headers", _headers(received.data)),
        ],
    )


def complaint_report(recipient: str, received: Received) -> bytes:
    """A Yahoo-style ARF report: the recipient marked the message as spam; the original is enclosed."""
    sender_domain = _header(received.data, "From").rpartition("@")[2].rstrip(">")
    fbl = f"{FBL_LOCAL_PART}@{received.mail_from.rpartition('@')[2]}"
    head = [
        f"From: Yahoo! Mail AntiSpam Feedback <{FBL_SENDER}>",
        f"To: <{fbl}>",
        "Subject: FW: Complaint about message from 127.0.0.1",
        f"Date: {format_datetime(received.received_at)}",
        f"Message-ID: <arf-{next(_BOUNDARIES)}@arf.mail.yahoo.test>",
    ]
    human = _crlf(
        "This is an email abuse report for an email message received from IP "
        f"{received.peer} on {format_datetime(received.received_at)}."
    )
    feedback = _crlf(
        "Feedback-Type: abuse\n"
        "User-Agent: Yahoo!-Mail-Feedback/2.0\n"
        "Version: 1\n"
        f"Original-Mail-From: <{received.mail_from}>\n"
        f"Original-Rcpt-To: <{recipient}>\n"
        f"Arrival-Date: {format_datetime(received.received_at)}\n"
        f"Source-IP: {received.peer}\n"
        f"Reported-Domain: {sender_domain}"
    )
    original = f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data
    return _multipart_report(
        "feedback-report",
        head,
        [
            ("text/plain; charset=us-ascii", human),
            ("message/feedback-report", feedback),
            ("message/rfc822", original),
        ],
    )


def _abuse_head(recipient: str, received: Received, subject: str) -> list[str]:
    return [
        f"From: <{recipient}>",
        f"To: <{ABUSE_LOCAL_PART}@{received.mail_from.rpartition('@')[2]}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(received.received_at)}",
        f"Message-ID: <abuse-{next(_BOUNDARIES)}@{recipient.rpartition('@')[2]}>",
        "MIME-Version: 1.0",
    ]


def abuse_quoted(recipient: str, received: Received) -> bytes:
    """A person's complaint to the sender's abuse desk in their own words, the message pasted below it with
    its headers (its return path among them), as a mail client quotes a forwarded message."""
    original = f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data
    quoted = original.decode("utf-8", "replace").replace("\r\n", "\n")
    head = _abuse_head(recipient, received, f"Spam from your platform: {_header(received.data, 'Subject')}")
    text = (
        "Hello,\n\nI never signed up for this and keep getting it. This is spam; please stop it.\n\n"
        f"-----Original Message-----\n{quoted}"
    )
    return _crlf("\n".join([*head, "Content-Type: text/plain; charset=utf-8", "", text]))


def abuse_attached(recipient: str, received: Received) -> bytes:
    """A person forwarding the message to the sender's abuse desk as an attachment, calling it phishing."""
    boundary = f"=_estafeta_world_abuse_{next(_BOUNDARIES)}"
    head = _abuse_head(recipient, received, "Phishing attempt")
    words = _crlf("This is a phishing attempt imitating my bank's login page. The original is attached.")
    original = f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data
    out = "\r\n".join([*head, f'Content-Type: multipart/mixed; boundary="{boundary}"', "", ""]).encode()
    out += f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".encode() + words
    out += f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n".encode() + original.rstrip(b"\r\n")
    return out + f"\r\n--{boundary}--\r\n".encode()


def auto_reply(recipient: str, received: Received) -> bytes:
    """An out-of-office reply (RFC 3834) to the return path."""
    head = [
        f"From: <{recipient}>",
        f"To: <{received.mail_from}>",
        f"Subject: Automatic reply: {_header(received.data, 'Subject')}",
        f"Date: {format_datetime(received.received_at)}",
        f"Message-ID: <ooo-{next(_BOUNDARIES)}@{recipient.rpartition('@')[2]}>",
        f"In-Reply-To: {_header(received.data, 'Message-ID')}",
        "Auto-Submitted: auto-replied",
        "X-Auto-Response-Suppress: All",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "I am out of the office until next week and will read your message when I am back.",
    ]
    return _crlf("\n".join(head))


class Reporter:
    """Sends reports from the world's event loop to the platform's inbound listener."""

    def __init__(self, count_sent: Callable[[str], None]) -> None:
        self._count_sent = count_sent
        self._target: tuple[str, int] | None = None
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def report_to(self, host: str, port: int) -> None:
        """Where reports go from now on (thread-safe)."""
        self._target = (host, port)

    def reset(self) -> None:
        """Stop reporting; reports still pending are dropped (thread-safe)."""
        self._target = None
        self._generation += 1

    def after_accept(self, provider: Provider, received: Received) -> None:
        """Mail back what the provider's scripted mailboxes report about a message it just accepted."""
        for recipient in received.rcpt_to:
            kind = provider.report_for(recipient)
            if kind == "ndr":
                report = non_delivery_report(provider.mx_host, recipient, received)
                self.send(provider.domain, "", received.mail_from, report)
            elif kind == "arf":
                fbl = f"{FBL_LOCAL_PART}@{received.mail_from.rpartition('@')[2]}"
                self.send(provider.domain, FBL_SENDER, fbl, complaint_report(recipient, received))
            elif kind == "auto-reply":
                self.send(provider.domain, "", received.mail_from, auto_reply(recipient, received))
            elif kind in ("abuse-quoted", "abuse-attached"):
                desk = f"{ABUSE_LOCAL_PART}@{received.mail_from.rpartition('@')[2]}"
                write = abuse_quoted if kind == "abuse-quoted" else abuse_attached
                self.send(provider.domain, recipient, desk, write(recipient, received))

    def send(self, provider: str, sender: str, recipient: str, message: bytes) -> None:
        """Deliver `message` shortly, from `sender` (empty: the null return path) to `recipient`."""
        if self._target is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(self._generation, provider, sender, recipient, message)
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("report delivery failed", exc_info=task.exception())

    async def _deliver(
        self, generation: int, provider: str, sender: str, recipient: str, message: bytes
    ) -> None:
        pause = RETRY_PAUSE
        await asyncio.sleep(REPORT_DELAY)
        for _ in range(ATTEMPTS):
            target = self._target
            if target is None or generation != self._generation:
                return
            try:
                # As receiving providers do: STARTTLS when offered, the certificate not checked.
                async with aiosmtplib.SMTP(
                    hostname=target[0], port=target[1], start_tls=None, validate_certs=False, timeout=10
                ) as smtp:
                    await smtp.sendmail(sender, [recipient], message)  # "" is the null return path <>
            except aiosmtplib.SMTPRecipientsRefused as exc:
                if all(refusal.code >= 500 for refusal in exc.recipients):
                    log.info("report from %s refused: %s", provider, exc.recipients[0].message)
                    return
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code >= 500:
                    log.info("report from %s refused: %s %s", provider, exc.code, exc.message)
                    return
            except (OSError, aiosmtplib.SMTPException):
                pass  # nothing listens yet, or the connection broke: try again
            else:
                self._count_sent(provider)
                return
            await asyncio.sleep(pause)
            pause *= 2

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
