"""Consent: subscribing with a record of where and when, double opt-in, and re-confirming inactive contacts.

Lists use double opt-in unless created otherwise: a new subscriber is `unconfirmed` and gets a mail with a
signed link; only `subscribed` contacts ever receive campaigns. A caller may state that a contact already
confirmed elsewhere (`ConsentRecord.confirmed`), which is kept as the consent source.

Contacts who have not engaged for `reconfirm_after_days` get a re-confirmation campaign; those who do not
answer within `reconfirm_grace_days` are unsubscribed (method `not-reconfirmed`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from estafeta import plans
from estafeta.accept import Accepter, Submission
from estafeta.audience.links import Links
from estafeta.audience.lists import AudienceError
from estafeta.clock import Clock
from estafeta.compose import Address, Draft, parse_address
from estafeta.config import Settings
from estafeta.store import audience as store
from estafeta.store import campaigns as campaign_store
from estafeta.store import suppressions
from estafeta.store.db import Database
from estafeta.text import flattened

CONFIRM_BATCH = 100
RECONFIRM_RATE = 50.0
RECONFIRM_SUBJECT = "Do you still want {{ list.name }}?"
RECONFIRM_TEXT = """Hello,

you have not opened {{ list.name }} for a while. If you still want it, confirm here:
{{ confirm_url }}

If you do nothing, we stop writing to you in {{ grace_days }} days.
Unsubscribe now: {{ unsubscribe_url }}
"""
RECONFIRM_HTML = """<p>Hello,</p>
<p>you have not opened {{ list.name }} for a while. If you still want it,
<a href="{{ confirm_url }}">confirm here</a>.</p>
<p>If you do nothing, we stop writing to you in {{ grace_days }} days.
<a href="{{ unsubscribe_url }}">Unsubscribe now</a>.</p>
"""


@dataclass(frozen=True)
class ConsentRecord:
    """How the people being subscribed agreed: `source` (e.g. "form", "import:crm-2024"), when, and whether
    they already confirmed their address (then no confirmation mail is sent)."""

    source: str
    at: datetime | None = None
    confirmed: bool = False


@dataclass(frozen=True)
class Confirmed:
    list_name: str
    previous_status: str  # unconfirmed | subscribed (a re-confirmation)


class Consent:
    def __init__(
        self, db: Database, settings: Settings, clock: Clock, accepter: Accepter, links: Links
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.accepter = accepter
        self.links = links

    async def subscribe(
        self,
        account_id: int,
        mailing_list: store.ListRow,
        people: list[tuple[str, dict[str, Any]]],
        consent: ConsentRecord,
        *,
        renew: bool = False,
    ) -> list[store.Subscribed]:
        """Put people on a list; those who still have to confirm get the confirmation mail.

        `renew` lets an address that unsubscribed come back: only for the person's own request (the
        hosted form), never for imports.
        """
        now = self.clock.now()
        status = "unconfirmed" if mailing_list.double_opt_in and not consent.confirmed else "subscribed"
        entries = [
            store.NewSubscription(email, attributes, status, consent.source, consent.at or now)
            for email, attributes in people
        ]

        def work(conn: Connection) -> list[store.Subscribed]:
            return plans.within_contacts(
                conn,
                account_id,
                lambda: store.subscribe_many(
                    conn, account_id, mailing_list.id, entries, renew=renew, now=now
                ),
            )

        try:
            result = await self.db.run(work)
        except plans.OverPlan as exc:  # nothing of this request was stored
            raise AudienceError("contacts", str(exc), status=429) from exc
        waiting = [r for r in result if r.status == "unconfirmed" and r.outcome in ("new", "renewed")]
        await self.send_confirmations(account_id, mailing_list, waiting)
        return result

    async def send_confirmations(
        self, account_id: int, mailing_list: store.ListRow, people: list[store.Subscribed]
    ) -> None:
        sender = parse_address(mailing_list.from_address)
        for start in range(0, len(people), CONFIRM_BATCH):
            submissions = [
                Submission(
                    self._confirmation(sender, mailing_list, person),
                    ["double-opt-in"],
                    {"list_id": mailing_list.id},
                )
                for person in people[start : start + CONFIRM_BATCH]
            ]
            await self.accepter.accept(account_id, submissions, source="audience", prefix="")

    def _confirmation(self, sender: Address, mailing_list: store.ListRow, person: store.Subscribed) -> Draft:
        url = self.links.confirm_url(person.contact_id, mailing_list.id)
        days = f"{self.settings.audience.confirm_days:g}"
        text = (
            f"Please confirm that you want to receive {mailing_list.name}:\n{url}\n\n"
            f"The link works for {days} days. If you did not ask for this, ignore this message: "
            "you will not be added.\n"
        )
        name = _escape(mailing_list.name)
        html = (
            f"<p>Please confirm that you want to receive {name}:</p>"
            f'<p><a href="{_escape(url)}">Yes, subscribe me</a></p>'
            f"<p>The link works for {days} days. If you did not ask for this, ignore this message: "
            "you will not be added.</p>"
        )
        return Draft(
            from_=sender,
            to=[Address(person.email)],
            subject=f"Confirm your subscription to {flattened(mailing_list.name)}",
            text=text,
            html=html,
        )

    async def confirm(self, token: str) -> Confirmed | None:
        """Confirm a subscription from the link in a confirmation or re-confirmation mail."""
        audience = self.settings.audience
        max_age = max(audience.confirm_days, audience.reconfirm_grace_days) * 86400
        ids = self.links.tokens.read_confirm(token, max_age)
        if ids is None:
            return None
        return await self.db.run(_confirm, *ids, self.clock.now())

    async def reconfirm_inactive(self) -> int:
        """Start re-confirmation campaigns for inactive contacts and end unanswered ones; returns how many
        contacts were asked."""
        audience = self.settings.audience
        if audience.reconfirm_after_days <= 0:
            return 0
        now = self.clock.now()
        inactive = await self.db.run(
            store.inactive_since, now - timedelta(days=audience.reconfirm_after_days), 10_000
        )
        by_list: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for list_id, contact_id, email in inactive:
            by_list[list_id].append((contact_id, email))
        for list_id, people in by_list.items():
            await self.db.run(_start_reconfirmation, list_id, people, now)
        await self.db.run(
            store.end_unanswered_reconfirmations, now - timedelta(days=audience.reconfirm_grace_days), now
        )
        return len(inactive)


def _confirm(conn: Connection, contact_id: int, list_id: int, now: datetime) -> Confirmed | None:
    """Confirm a subscription; someone who had left every list and now confirmed a new subscription
    themselves is taken off the account's `unsubscribe` suppression."""
    previous = store.confirm(conn, contact_id, list_id, now)
    subscription = store.get_subscription(conn, contact_id, list_id)
    if previous is None or subscription is None or subscription.status != "subscribed":
        return None
    contact = store.get_contact(conn, contact_id)
    if previous == "unconfirmed" and contact is not None:
        entry = suppressions.get(conn, contact.account_id, contact.email)
        if entry is not None and entry.reason == "unsubscribe":
            suppressions.remove(
                conn,
                contact.account_id,
                contact.email,
                actor="recipient",
                now=now,
                note="confirmed a subscription",
            )
    return Confirmed(subscription.list_name, previous)


def _start_reconfirmation(
    conn: Connection, list_id: int, people: list[tuple[int, str]], now: datetime
) -> None:
    """One re-confirmation campaign for a list, sending at once, and its contacts marked as asked."""
    mailing_list = store.list_by_id(conn, list_id)
    asked = set(store.mark_reconfirm_sent(conn, list_id, [contact_id for contact_id, _ in people], now))
    if mailing_list is None or not asked:
        return
    campaign = campaign_store.create(
        conn,
        campaign_store.NewCampaign(
            account_id=mailing_list.account_id,
            name=f"Re-confirmation: {mailing_list.name} ({now:%Y-%m-%d})",
            list_id=list_id,
            segment_id=None,
            from_address=mailing_list.from_address,
            reply_to="",
            subject=RECONFIRM_SUBJECT,
            html=RECONFIRM_HTML,
            text=RECONFIRM_TEXT,
            rate=RECONFIRM_RATE,
            kind="reconfirm",
        ),
        now,
        state="sending",
        fixed=True,
    )
    campaign_store.add_recipients(conn, campaign.id, [p for p in people if p[0] in asked], now)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
