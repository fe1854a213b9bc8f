"""Reading accepted messages and their events, and cancelling what still waits to be sent."""

from __future__ import annotations

from estafeta.clock import Clock
from estafeta.store import events as event_store
from estafeta.store import messages as store
from estafeta.store import reputation as reputation_store
from estafeta.store import search as search_store
from estafeta.store.db import Database

EventFilter = event_store.EventFilter
MessageQuery = search_store.MessageQuery


class Messages:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def get(self, account_id: int, message_id: str) -> store.MessageView | None:
        """A message with its recipients' queue state and full event history, scoped to one account."""
        return await self.db.run(store.get_message, account_id, message_id)

    async def events(self, flt: event_store.EventFilter, limit: int) -> list[event_store.EventRow]:
        return await self.db.run(event_store.list_events, flt, limit)

    async def search(self, query: search_store.MessageQuery, limit: int) -> list[search_store.MessageSummary]:
        """The account's messages matching the query (recipient, subject, tag, state, days), newest first."""
        return await self.db.run(search_store.search_messages, query, limit)

    async def cancel(self, account_id: int, message_id: str, actor: str) -> int | None:
        """Cancel the message's queued, deferred or held recipients (one `cancelled` event each); None when
        the account has no such message. Recipients being delivered right now are not stopped."""
        cancelled = await self._cancel(account_id, actor, message_id=message_id)
        if not cancelled and await self.db.run(store.get_raw, account_id, message_id) is None:
            return None
        return cancelled

    async def cancel_stream(self, account_id: int, stream: str, actor: str) -> int:
        """Cancel every waiting recipient of the account's stream."""
        return await self._cancel(account_id, actor, stream=stream)

    async def _cancel(
        self, account_id: int, actor: str, *, message_id: str | None = None, stream: str | None = None
    ) -> int:
        return await self.db.run(
            reputation_store.set_entries,
            account_id,
            self.clock.now(),
            from_states=reputation_store.CANCELLABLE,
            to_state="cancelled",
            event="cancelled",
            message_id=message_id,
            stream=stream,
            data={"by": actor},
        )
