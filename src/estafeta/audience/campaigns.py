"""Campaigns: a template sent to a list or segment, now or at a set time, throttled, pausable.

`Campaigns` holds the operations the API and CLI offer. `CampaignRunner` is the platform task that sends:
it starts scheduled campaigns when due, fixes their recipients chunk by chunk (each chunk a short
transaction moving a cursor on the campaign, so a crash resumes where it stopped), and for each sending
campaign renders and accepts the next batch of recipients, no further ahead of delivery than
`audience.lookahead` messages, through `Accepter.accept` (stream broadcast, List-Unsubscribe with https
and mailto URIs, tag `campaign:<id>` and metadata `campaign_id`). A recipient becomes `sent` in the
transaction that stores its message, so pausing, resuming, a crash or a second process never mail anyone
twice. Contacts who unsubscribed, were suppressed or never confirmed since the campaign started are
skipped, with the reason.

The rate (messages per second) is measured on the platform clock, with bursts of up to one second's worth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import Connection

from estafeta.accept import Accepted, Accepter, AcceptError, Submission
from estafeta.audience import segments
from estafeta.audience.consent import Consent
from estafeta.audience.contacts import contact_email
from estafeta.audience.links import Links
from estafeta.audience.lists import AudienceError, name_text, sender_address
from estafeta.audience.templates import CampaignTemplate, TemplateProblem
from estafeta.clock import Clock
from estafeta.compose import Address, AddressError, Draft, ListUnsubscribe, parse_address
from estafeta.config import Settings
from estafeta.store import audience as audience_store
from estafeta.store import campaigns as store
from estafeta.store.db import Database
from estafeta.suppression import SpamTraps, screen
from estafeta.waits import wait_set

CampaignRow = store.CampaignRow

log = logging.getLogger("estafeta.campaigns")

MAX_RATE = 10_000.0
LEASE_SECONDS = 60.0
SWEEP_SECONDS = 3600.0  # how often inactive contacts are looked for
STARTABLE = ("draft", "scheduled", "paused")


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    list_id: int
    subject: str
    html: str | None = None
    text: str | None = None
    segment_id: int | None = None
    from_address: str | None = None  # default: the list's
    reply_to: str | None = None
    rate: float = 50.0


def _sample_context(name: str) -> dict[str, Any]:
    return {
        "contact": {"email": "someone@example.com"},
        "email": "someone@example.com",
        "list": {"id": 0, "name": "list"},
        "campaign": {"id": 0, "name": name},
        "unsubscribe_url": "https://example.com/u/x",
        "preferences_url": "https://example.com/p/x",
        "confirm_url": "https://example.com/confirm/x",
        "grace_days": 14,
    }


def _problem(exc: TemplateProblem) -> AudienceError:
    line = f"line {exc.line}: " if exc.line else ""
    return AudienceError(exc.part, f"{line}{exc.reason}")


class Campaigns:
    def __init__(self, db: Database, clock: Clock, wake: Callable[[], None], chunk: int) -> None:
        self.db = db
        self.clock = clock
        self.wake = wake
        self.chunk = chunk  # recipients fixed per transaction

    async def create(self, account_id: int, spec: CampaignSpec) -> store.CampaignRow:
        name = name_text(spec.name)
        if not name:
            raise AudienceError("name", "a campaign needs a name")
        name_text(spec.subject, "subject")
        if not 0 < spec.rate <= MAX_RATE:
            raise AudienceError("rate", f"messages per second, more than 0 and at most {MAX_RATE:g}")
        mailing_list = await self.db.run(audience_store.get_list, account_id, spec.list_id)
        if mailing_list is None:
            raise AudienceError("list_id", f"no list {spec.list_id} in this account", status=404)
        if spec.segment_id is not None:
            segment = await self.db.run(audience_store.get_segment, account_id, spec.segment_id)
            if segment is None or segment.list_id != spec.list_id:
                raise AudienceError("segment_id", f"no segment {spec.segment_id} of list {spec.list_id}")
        sender = await sender_address(self.db, account_id, spec.from_address or mailing_list.from_address)
        reply_to = ""
        if spec.reply_to:
            try:
                reply_to = parse_address(spec.reply_to).header_value()
            except AddressError as exc:
                raise AudienceError("reply_to", exc.reason) from exc
        try:
            template = CampaignTemplate(spec.subject, spec.html, spec.text)
            template.render(_sample_context(name))
        except TemplateProblem as exc:
            raise _problem(exc) from exc
        new = store.NewCampaign(
            account_id=account_id,
            name=name,
            list_id=spec.list_id,
            segment_id=spec.segment_id,
            from_address=sender,
            reply_to=reply_to,
            subject=spec.subject,
            html=spec.html,
            text=spec.text,
            rate=spec.rate,
        )
        return await self.db.run(store.create, new, self.clock.now())

    async def list(self, account_id: int) -> list[store.CampaignRow]:
        return await self.db.run(store.list_for, account_id)

    async def get(self, account_id: int, campaign_id: int) -> store.CampaignRow:
        row = await self.db.run(store.get, account_id, campaign_id)
        if row is None:
            raise AudienceError("campaign_id", f"no campaign {campaign_id} in this account", status=404)
        return row

    async def send_now(self, account_id: int, campaign_id: int) -> store.CampaignRow:
        """Start sending (a draft, a scheduled campaign, or resume a paused one)."""
        row = await self.get(account_id, campaign_id)
        if not await self.db.run(start, row, self.clock.now(), self.chunk):
            raise AudienceError("state", f"a {row.state} campaign cannot be sent", status=409)
        self.wake()
        return await self.get(account_id, campaign_id)

    async def schedule(self, account_id: int, campaign_id: int, at: datetime) -> store.CampaignRow:
        if at.tzinfo is None:
            raise AudienceError("at", "needs a time zone, e.g. 2026-01-01T09:00:00Z")
        moved = await self.db.run(
            store.transition,
            account_id,
            campaign_id,
            ("draft", "scheduled"),
            "scheduled",
            self.clock.now(),
            scheduled_at=at,
        )
        if not moved:
            row = await self.get(account_id, campaign_id)
            raise AudienceError("state", f"a {row.state} campaign cannot be scheduled", status=409)
        self.wake()
        return await self.get(account_id, campaign_id)

    async def pause(self, account_id: int, campaign_id: int) -> store.CampaignRow:
        return await self._move(
            account_id, campaign_id, ("sending", "scheduled"), "paused", paused_for="sender"
        )

    async def resume(self, account_id: int, campaign_id: int) -> store.CampaignRow:
        row = await self.get(account_id, campaign_id)
        if row.state != "paused":
            raise AudienceError(
                "state", f"only a paused campaign can be resumed; this one is {row.state}", 409
            )
        return await self.send_now(account_id, campaign_id)

    async def cancel(self, account_id: int, campaign_id: int) -> store.CampaignRow:
        return await self._move(
            account_id, campaign_id, ("draft", "scheduled", "sending", "paused"), "cancelled"
        )

    async def _move(
        self, account_id: int, campaign_id: int, from_states: tuple[str, ...], to_state: str, **values: str
    ) -> store.CampaignRow:
        if not await self.db.run(
            store.transition, account_id, campaign_id, from_states, to_state, self.clock.now(), **values
        ):
            row = await self.get(account_id, campaign_id)
            raise AudienceError("state", f"a {row.state} campaign cannot become {to_state}", status=409)
        return await self.get(account_id, campaign_id)

    async def stats(self, account_id: int, campaign_id: int) -> tuple[dict[str, int], dict[str, int]]:
        await self.get(account_id, campaign_id)
        return await self.db.run(store.stats, campaign_id), await self.db.run(store.skip_reasons, campaign_id)


def start(conn: Connection, row: store.CampaignRow, now: datetime, chunk: int) -> bool:
    """Move a campaign to `sending`; the first time, fix the first chunk of its recipients (all of a small
    list's), the runner fixes the rest."""
    if not store.transition(
        conn, row.account_id, row.id, STARTABLE, "sending", now, started_at=row.started_at or now
    ):
        return False
    fix_recipients(conn, row, now, chunk)
    return True


def fix_recipients(conn: Connection, row: store.CampaignRow, now: datetime, chunk: int) -> bool:
    """Fix the next `chunk` subscribed contacts of the list (those in the segment, if it has one) as
    recipients and move the campaign's cursor past them, in this transaction; returns whether all are fixed.

    Chunks keep each transaction short (SQLite's write lock is held for milliseconds, not for the whole
    list), and the cursor commits with its chunk, so a crash resumes after the last chunk stored."""
    after = store.cursor(conn, row.id)
    if after is None:
        return True
    segment = None
    if row.segment_id is not None:
        segment = audience_store.get_segment(conn, row.account_id, row.segment_id)
    if segment is None:
        upto = audience_store.window_end(conn, row.list_id, after, chunk)
        store.add_members(conn, row.id, row.list_id, after, upto, now)
    else:
        conditions, match = segments.parse_conditions(segment.conditions), segment.match
        page = audience_store.members(conn, row.list_id, after_id=after, limit=chunk)
        chosen = [
            (m.contact_id, m.email)
            for m in page
            if not conditions or segments.matches(conditions, match, {"email": m.email, **m.attributes})
        ]
        store.add_recipients(conn, row.id, chosen, now)
        upto = page[-1].contact_id if len(page) == chunk else None
    store.move_cursor(conn, row.id, upto, now)
    return upto is None


@dataclass
class _Work:
    mailing_list: audience_store.ListRow
    pending: list[store.Pending]
    statuses: dict[int, str]
    attributes: dict[int, dict[str, Any]]
    suppressed: dict[str, str]


def _next_work(
    conn: Connection, row: store.CampaignRow, limit: int, lookahead: int, traps: SpamTraps
) -> _Work | None:
    """The next recipients to render: at most `limit`, and only as many as keep the account's broadcast
    messages waiting for delivery within `lookahead`; None when there is no room for any (or the list is
    gone, with its campaigns)."""
    mailing_list = audience_store.list_by_id(conn, row.list_id)
    if mailing_list is None:
        return None
    pending = store.next_pending(conn, row.id, limit)
    room = lookahead - store.waiting(conn, row.account_id)
    if pending and room < 1:
        return None
    pending = pending[:room]
    contact_ids = [p.contact_id for p in pending]
    found = screen(conn, row.account_id, [p.email for p in pending], traps)
    return _Work(
        mailing_list,
        pending,
        audience_store.statuses_for(conn, row.list_id, contact_ids),
        audience_store.attributes_of(conn, contact_ids),
        {email: f"{s.reason} ({s.scope})" for email, s in found.items()},
    )


def _finish(conn: Connection, row: store.CampaignRow, now: datetime) -> None:
    """A campaign without pending recipients is sent, once all of its recipients are fixed."""
    if store.cursor(conn, row.id) is None:
        store.transition(conn, row.account_id, row.id, ("sending",), "sent", now)


class _Bucket:
    """Messages a campaign may send now: `rate` per second of platform time, at most one second's worth."""

    def __init__(self, rate: float, now: datetime) -> None:
        self.rate = rate
        self.tokens = max(rate, 1.0)
        self.stamp = now

    def available(self, now: datetime) -> int:
        elapsed = max((now - self.stamp).total_seconds(), 0.0)
        self.tokens = min(max(self.rate, 1.0), self.tokens + elapsed * self.rate)
        self.stamp = now
        return int(self.tokens)

    def take(self, count: int) -> None:
        self.tokens -= count


class CampaignRunner:
    """The platform task that sends campaigns (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        accepter: Accepter,
        links: Links,
        consent: Consent,
        owner: str,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.accepter = accepter
        self.links = links
        self.consent = consent
        self.owner = owner
        self.traps = SpamTraps(settings.suppression.spam_traps)
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._buckets: dict[int, _Bucket] = {}
        self._templates: dict[int, CampaignTemplate] = {}
        self._next_sweep: datetime | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Send until `stop()`; a round that did work is followed at once by the next."""
        while not self._stopping:
            try:
                busy = await self.tick()
            except Exception:
                log.exception("campaign round failed")
                busy = False
            if busy:
                await asyncio.sleep(0)
                continue
            self._wakeup.clear()
            await wait_set(self._wakeup, self.settings.audience.tick_seconds)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def tick(self) -> bool:
        """One round: start due campaigns, look for inactive contacts hourly, send one batch per campaign.
        Returns whether something was sent (more may be waiting)."""
        now = self.clock.now()
        chunk = self.settings.audience.recipients_chunk
        for due in await self.db.run(store.due_scheduled, now):
            await self.db.run(start, due, now, chunk)
        if self._next_sweep is None or now >= self._next_sweep:
            self._next_sweep = now + timedelta(seconds=SWEEP_SECONDS)
            await self.consent.reconfirm_inactive()
        busy = False
        until = now + timedelta(seconds=LEASE_SECONDS)
        for campaign in await self.db.run(store.sending):
            if await self.db.run(store.lease, campaign.id, self.owner, now, until):
                if campaign.recipients_fixed_at is None:
                    await self._fix(campaign, now)
                busy = await self._batch(campaign, now) or busy
        return busy

    async def _fix(self, campaign: store.CampaignRow, now: datetime) -> None:
        """Fix all of the campaign's remaining recipients, one chunk per transaction, keeping the lease."""
        chunk = self.settings.audience.recipients_chunk
        while not self._stopping and not await self.db.run(fix_recipients, campaign, now, chunk):
            now = self.clock.now()
            until = now + timedelta(seconds=LEASE_SECONDS)
            if not await self.db.run(store.lease, campaign.id, self.owner, now, until):
                return

    async def _batch(self, campaign: store.CampaignRow, now: datetime) -> bool:
        bucket = self._buckets.get(campaign.id)
        if bucket is None or bucket.rate != campaign.rate:
            bucket = self._buckets[campaign.id] = _Bucket(campaign.rate, now)
        allowed = min(bucket.available(now), self.settings.audience.campaign_batch)
        if allowed < 1:
            return False
        work = await self.db.run(_next_work, campaign, allowed, self.settings.audience.lookahead, self.traps)
        if work is None:
            return False  # the lookahead is full: delivery has to catch up first
        if not work.pending:
            await self.db.run(_finish, campaign, now)
            self._buckets.pop(campaign.id, None)
            self._templates.pop(campaign.id, None)
            return False
        progress: list[store.Progress] = []
        submissions: list[Submission] = []
        recipients: list[int] = []
        for pending in work.pending:
            status = work.statuses.get(pending.contact_id)
            if status != "subscribed":
                progress.append(
                    store.Progress(pending.id, "skipped", f"not subscribed ({status or 'removed'})")
                )
            elif pending.email in work.suppressed:
                progress.append(
                    store.Progress(pending.id, "skipped", f"suppressed: {work.suppressed[pending.email]}")
                )
            else:
                try:
                    submissions.append(self._submission(campaign, work, pending))
                    recipients.append(pending.id)
                except (TemplateProblem, AddressError) as exc:
                    progress.append(store.Progress(pending.id, "failed", str(exc)))
        try:
            if progress:
                await self.db.run(store.record, progress, now)
        except store.AlreadySent:
            return True  # another round got there first; read the cursor again
        if not submissions:
            return True

        def mark_sent(conn: Connection, accepted: list[Accepted]) -> None:
            sent = [store.Progress(r, "sent", "", a.id) for r, a in zip(recipients, accepted, strict=True)]
            store.record(conn, sent, now)

        try:
            await self.accepter.accept(
                campaign.account_id, submissions, source="campaign", prefix="", on_commit=mark_sent
            )
        except AcceptError as exc:
            log.warning("campaign %d paused: %s: %s", campaign.id, exc.field, exc.reason)
            error = f"{exc.field}: {exc.reason}"[:2000]
            # A paused account or a reached warm-up limit lifts without the sender: so does this pause.
            paused_for = "standing" if exc.kind in ("account-paused", "sending-limit") else "error"
            await self.db.run(
                store.transition,
                campaign.account_id,
                campaign.id,
                ("sending",),
                "paused",
                now,
                error=error,
                paused_for=paused_for,
            )
            return False
        except store.AlreadySent:
            return True  # another process got there first; read the cursor again
        bucket.take(len(submissions))
        return True

    def _template(self, campaign: store.CampaignRow) -> CampaignTemplate:
        template = self._templates.get(campaign.id)
        if template is None:
            template = self._templates[campaign.id] = CampaignTemplate(
                campaign.subject, campaign.html, campaign.text
            )
        return template

    def _submission(self, campaign: store.CampaignRow, work: _Work, pending: store.Pending) -> Submission:
        links = self.links
        contact_id, list_id = pending.contact_id, campaign.list_id
        unsubscribe_url = links.unsubscribe_url(contact_id, list_id, campaign.id)
        preferences_url = links.preferences_url(contact_id)
        attributes = work.attributes.get(contact_id, {})
        context = {
            "contact": {**attributes, "email": pending.email},
            "email": pending.email,
            "list": {"id": list_id, "name": work.mailing_list.name},
            "campaign": {"id": campaign.id, "name": campaign.name},
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": preferences_url,
            "confirm_url": links.confirm_url(contact_id, list_id) if campaign.kind == "reconfirm" else "",
            "grace_days": f"{self.settings.audience.reconfirm_grace_days:g}",
        }
        subject, html, text = self._template(campaign).render(context)
        html, text = _with_footer(html, text, work.mailing_list.name, unsubscribe_url, preferences_url)
        draft = Draft(
            from_=parse_address(campaign.from_address),
            to=[Address(contact_email(pending.email))],
            reply_to=[parse_address(campaign.reply_to)] if campaign.reply_to else [],
            subject=subject,
            text=text,
            html=html,
            stream="broadcast",
            unsubscribe=ListUnsubscribe(
                unsubscribe_url, links.unsubscribe_mailto(contact_id, list_id, campaign.id)
            ),
        )
        metadata = {"campaign_id": campaign.id, "list_id": list_id, "contact_id": contact_id}
        return Submission(draft, [f"campaign:{campaign.id}"], metadata)


def _with_footer(
    html: str | None, text: str, list_name: str, unsubscribe_url: str, preferences_url: str
) -> tuple[str | None, str]:
    """Add a visible unsubscribe link (and the preference center) where the template did not show one."""
    if unsubscribe_url not in text:
        text = (
            f"{text.rstrip()}\n\n--\nYou receive this as a subscriber of {list_name}.\n"
            f"Unsubscribe: {unsubscribe_url}\nPreferences: {preferences_url}\n"
        )
    if html is not None and escape(unsubscribe_url) not in html and unsubscribe_url not in html:
        footer = (
            f'<p style="font-size:12px;color:#666">You receive this as a subscriber of {escape(list_name)}. '
            f'<a href="{escape(unsubscribe_url)}">Unsubscribe</a> · '
            f'<a href="{escape(preferences_url)}">Preferences</a></p>'
        )
        lower = html.lower()
        at = lower.rfind("</body>")
        html = html[:at] + footer + html[at:] if at >= 0 else html + footer
    return html, text
