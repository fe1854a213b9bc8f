"""The audience as the core offers it: lists, contacts and their consent, segments, campaigns and the
links and tokens of list mail, built once and shared by the API, the command line and the public pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from estafeta.accept import Accepter
from estafeta.audience import contacts, segments, unsubscribe
from estafeta.audience.campaigns import CampaignRunner, Campaigns
from estafeta.audience.consent import Consent, ConsentRecord
from estafeta.audience.importer import ImportReport, import_csv
from estafeta.audience.links import Links
from estafeta.audience.lists import AudienceError, create_list
from estafeta.audience.tokens import Tokens
from estafeta.audience.unsubscribe import Unsubscriber
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.ids import parse_id
from estafeta.store import audience as store
from estafeta.store.db import Database

ListRow = store.ListRow
SegmentRow = store.SegmentRow


class Audience:
    """Owns `tokens` and `links` (signed links of list mail), `consent` (subscriptions and double
    opt-in), `unsubscriber` (one-click, mailto, pages), `campaigns` (what senders do to campaigns) and
    `runner` (the task that sends them, run by the platform)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        accepter: Accepter,
        secret: bytes,
        public_url: Callable[[], str],
        owner: str,
    ) -> None:
        """`public_url` is the base of the links in list mail; `owner` names this process in the campaign
        runner's leases."""
        self.db = db
        self.clock = clock
        self.tokens = Tokens(secret, clock)
        self.links = Links(self.tokens, public_url, settings.return_path_domain)
        self.consent = Consent(db, settings, clock, accepter, self.links)
        self.unsubscriber = Unsubscriber(db, clock, self.tokens)
        self.runner = CampaignRunner(db, settings, clock, accepter, self.links, self.consent, owner)
        self.campaigns = Campaigns(db, clock, self.runner.wake, settings.audience.recipients_chunk)

    # -- lists -----------------------------------------------------------------------------------------
    async def create_list(
        self, account_id: int, name: str, from_address: str, double_opt_in: bool = True
    ) -> store.ListRow:
        return await create_list(self.db, account_id, name, from_address, double_opt_in, self.clock.now())

    async def lists(self, account_id: int) -> list[store.ListRow]:
        return await self.db.run(store.list_lists, account_id)

    async def get_list(self, account_id: int, list_id: int) -> store.ListRow:
        row = await self.db.run(store.get_list, account_id, list_id)
        if row is None:
            raise AudienceError("list_id", f"no list {list_id} in this account", status=404)
        return row

    async def find_list(self, account_id: int, name_or_id: str) -> store.ListRow:
        """A list named (or numbered) on a command line."""
        number = parse_id(name_or_id)
        row = await self.db.run(store.get_list, account_id, number) if number is not None else None
        row = row or await self.db.run(store.find_list_by_name, account_id, name_or_id)
        if row is None:
            raise AudienceError("list", f"no list {name_or_id!r} in this account; see `estafeta lists list`")
        return row

    async def public_list(self, public_id: str) -> store.ListRow | None:
        """The list behind a hosted subscription form."""
        return await self.db.run(store.find_public_list, public_id)

    # -- contacts --------------------------------------------------------------------------------------
    async def subscribe(
        self,
        account_id: int,
        mailing_list: store.ListRow,
        email: str,
        attributes: dict[str, Any],
        record: ConsentRecord,
        *,
        renew: bool = False,
    ) -> store.Subscribed:
        """Put one person on a list (checked and normalised first); see `Consent.subscribe`."""
        (result,) = await self.consent.subscribe(
            account_id,
            mailing_list,
            [(contacts.contact_email(email), contacts.attributes(attributes))],
            record,
            renew=renew,
        )
        return result

    async def contacts(
        self,
        list_id: int,
        *,
        status: str | None = None,
        search: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[tuple[store.ContactRow, store.SubscriptionRow]]:
        """A page of the list's contacts; `search` keeps addresses containing it."""
        return await self.db.run(
            store.list_contacts, list_id, status=status, search=search, after_id=after_id, limit=limit
        )

    async def remove_contact(
        self, account_id: int, list_id: int, contact_id: int, actor: str
    ) -> unsubscribe.Outcome:
        """Take a contact off a list for the sender: the subscription ends (method `sender`, the
        `unsubscribed` event names `actor`) and, like any unsubscribe, later imports keep it ended."""
        await self.get_list(account_id, list_id)
        outcome = await self.unsubscriber.remove(account_id, list_id, contact_id, actor)
        if outcome is None:
            raise AudienceError("contact_id", f"no contact {contact_id} on list {list_id}", status=404)
        return outcome

    async def subscription(self, contact_id: int, list_id: int) -> store.SubscriptionRow | None:
        return await self.db.run(store.get_subscription, contact_id, list_id)

    async def import_csv(
        self,
        account_id: int,
        mailing_list: store.ListRow,
        text: str,
        record: ConsentRecord,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportReport:
        return await import_csv(self.consent, account_id, mailing_list, text, record, progress=progress)

    # -- segments --------------------------------------------------------------------------------------
    async def create_segment(
        self, account_id: int, list_id: int, name: str, match: str, conditions: list[dict[str, Any]]
    ) -> store.SegmentRow:
        """A segment of the list; the conditions are checked first (`segments.SegmentError`)."""
        segments.parse_conditions(conditions)
        return await self.db.run(
            store.create_segment, account_id, list_id, name, match, conditions, self.clock.now()
        )

    async def segments(self, account_id: int, list_id: int) -> list[store.SegmentRow]:
        return await self.db.run(store.list_segments, account_id, list_id)

    async def segment_size(self, segment: store.SegmentRow) -> int:
        """Subscribed contacts in the segment now."""
        return await segments.subscribers(self.db, segment)
