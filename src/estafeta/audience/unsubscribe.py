"""Unsubscribing, all three ways (RFC 8058 one-click POST, the `mailto:` address, the page behind the body's
link), and the preference center.

Every way ends in one transaction: the subscription ends (or, for "all mail", every subscription ends and
the address goes on the account's suppression list with reason `unsubscribe`, which holds for broadcast
mail only), the campaign that carried the link counts the unsubscribe, and an `unsubscribed` event is
logged. Repeating it changes nothing, so a provider may POST as often as it likes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from estafeta.audience.tokens import Tokens
from estafeta.clock import Clock
from estafeta.store import audience as store
from estafeta.store import campaigns as campaign_store
from estafeta.store import suppressions
from estafeta.store.db import Database
from estafeta.store.events import NewEvent, record

METHODS = ("one-click", "mailto", "page", "preferences")  # the recipient's ways; a sender's is `sender`


@dataclass(frozen=True)
class Outcome:
    """What an unsubscribe did: the lists it ended (empty when it had been done before)."""

    contact_id: int
    email: str
    lists: list[str] = field(default_factory=list)
    everything: bool = False


@dataclass(frozen=True)
class Preferences:
    contact_id: int
    email: str
    subscriptions: list[store.SubscriptionRow]
    unsubscribed_from_all: bool


def _unsubscribe(
    conn: Connection,
    contact_id: int,
    list_ids: list[int] | None,
    campaign_id: int | None,
    method: str,
    now: datetime,
    *,
    account_id: int | None = None,
    actor: str | None = None,
) -> Outcome | None:
    """End subscriptions (`list_ids` None: all of them, and suppress the address for broadcast mail).
    With `account_id`, a contact of another account is not found; `actor` names who did it (else the
    recipient)."""
    contact = store.get_contact(conn, contact_id)
    if contact is None or (account_id is not None and contact.account_id != account_id):
        return None
    names = {s.list_id: s.list_name for s in store.subscriptions_of(conn, contact_id)}
    changed = store.unsubscribe(conn, contact_id, list_ids, method, now)
    suppressed = None
    if list_ids is None:
        entry = suppressions.NewSuppression(
            contact.account_id,
            "address",
            contact.email,
            "unsubscribe",
            f"unsubscribed from all lists ({method})",
        )
        suppressed = suppressions.add(conn, entry, actor="recipient", now=now, note=method)
    message_id = None
    if campaign_id is not None:
        campaign_store.mark_unsubscribed(conn, campaign_id, contact_id, now)
        message_id = campaign_store.message_for(conn, campaign_id, contact_id)
    if changed or suppressed is not None:
        data = {"method": method, "lists": changed, "all": list_ids is None, "campaign_id": campaign_id}
        if actor is not None:
            data["actor"] = actor
        record(conn, [NewEvent(contact.account_id, "unsubscribed", data, message_id, contact.email)], now)
    return Outcome(contact_id, contact.email, [names[i] for i in changed if i in names], list_ids is None)


def _preferences(conn: Connection, contact_id: int) -> Preferences | None:
    contact = store.get_contact(conn, contact_id)
    if contact is None:
        return None
    entry = suppressions.get(conn, contact.account_id, contact.email)
    return Preferences(
        contact_id,
        contact.email,
        store.subscriptions_of(conn, contact_id),
        entry is not None and entry.reason == "unsubscribe",
    )


def _set_preferences(conn: Connection, contact_id: int, keep: set[int], now: datetime) -> Preferences | None:
    """Keep exactly the lists in `keep`: others end, unsubscribed ones in `keep` start again (the person
    asked for them through a link only their mailbox holds, so that counts as confirmed consent)."""
    current = _preferences(conn, contact_id)
    if current is None:
        return None
    ending = [
        s.list_id for s in current.subscriptions if s.status != "unsubscribed" and s.list_id not in keep
    ]
    if ending:
        _unsubscribe(conn, contact_id, ending, None, "preferences", now)
    contact = store.get_contact(conn, contact_id)
    assert contact is not None
    for s in current.subscriptions:
        if s.status == "unsubscribed" and s.list_id in keep:
            entry = store.NewSubscription(contact.email, {}, "subscribed", "preference center", now)
            store.subscribe_many(conn, contact.account_id, s.list_id, [entry], renew=True, now=now)
    if keep and current.unsubscribed_from_all:
        suppressions.remove(
            conn,
            contact.account_id,
            contact.email,
            actor="recipient",
            now=now,
            note="resubscribed in preferences",
        )
    return _preferences(conn, contact_id)


class Unsubscriber:
    def __init__(self, db: Database, clock: Clock, tokens: Tokens) -> None:
        self.db = db
        self.clock = clock
        self.tokens = tokens

    async def by_token(self, token: str, method: str) -> Outcome | None:
        """Unsubscribe from the list a link or mailto address names; None for a token that is not ours."""
        found = self.tokens.read_unsubscribe(token)
        if found is None:
            return None
        return await self.db.run(
            _unsubscribe, found.contact_id, [found.list_id], found.campaign_id, method, self.clock.now()
        )

    async def everything(self, contact_id: int, method: str) -> Outcome | None:
        """Leave every list of the account and stop all of its broadcast mail to the address."""
        return await self.db.run(_unsubscribe, contact_id, None, None, method, self.clock.now())

    async def remove(self, account_id: int, list_id: int, contact_id: int, actor: str) -> Outcome | None:
        """The sender takes a contact of theirs off a list (method `sender`); None for no such contact."""

        def work(conn: Connection) -> Outcome | None:
            if store.get_subscription(conn, contact_id, list_id) is None:
                return None
            now = self.clock.now()
            return _unsubscribe(
                conn, contact_id, [list_id], None, "sender", now, account_id=account_id, actor=actor
            )

        return await self.db.run(work)

    async def preferences(self, contact_id: int) -> Preferences | None:
        return await self.db.run(_preferences, contact_id)

    async def set_preferences(self, contact_id: int, keep: set[int]) -> Preferences | None:
        return await self.db.run(_set_preferences, contact_id, keep, self.clock.now())

    # -- the inbound listener's mailto hook ---------------------------------------------------------
    def accepts(self, token: str) -> bool:
        """Whether `unsub+<token>@…` is an address this platform handed out."""
        return self.tokens.read_unsubscribe(token) is not None

    async def mailto(self, token: str) -> None:
        await self.by_token(token, "mailto")
