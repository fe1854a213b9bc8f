"""Webhook administration: an account's endpoints, their delivery log, replays and test deliveries.

The API and the command line both go through `WebhookEndpoints`, so an endpoint is checked the same way
whichever way it is added (an http(s) URL, on the public internet unless the platform allows private
addresses, known event type names). `account_id` None means any account (the operator's command line).
Sending is the dispatcher's work (`estafeta.webhooks`); this module wakes it when a delivery is due now.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from estafeta.audit import Actor, record
from estafeta.clock import Clock
from estafeta.config import WebhookSettings
from estafeta.public_http import canonical_url, private_target
from estafeta.store import webhooks as store
from estafeta.store.db import Database
from estafeta.text import TextError, one_line
from estafeta.webhooks import TEST_EVENT, new_secret, test_payload

EndpointRow = store.EndpointRow
DeliveryRow = store.DeliveryRow
EVENT_TYPE = re.compile(r"\*|[a-z][a-z0-9_.]{0,39}")
STATES = ("pending", "delivered", "failed")
MAX_DESCRIPTION = 200


class WebhookError(ValueError):
    """A webhook request that cannot be carried out: `field` names the input (if one is at fault),
    `status` is the HTTP answer."""

    def __init__(self, reason: str, *, field: str | None = None, status: int = 422) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field
        self.status = status


def check_url(url: str) -> str:
    """The URL in the canonical form it is stored and used in (see `public_http.canonical_url`)."""
    return canonical_url(url)


def check_event_types(types: list[str]) -> list[str]:
    bad = [t for t in types if not EVENT_TYPE.fullmatch(t)]
    if bad:
        raise ValueError(f"not event type names: {', '.join(bad)}")
    return sorted(set(types))


def check_description(text: str) -> str:
    """A description as stored: one line, at most 200 characters."""
    try:
        one_line(text)
    except TextError as exc:
        raise ValueError(str(exc)) from exc
    if len(text) > MAX_DESCRIPTION:
        raise ValueError(f"at most {MAX_DESCRIPTION} characters")
    return text


def check_reachable(url: str, settings: WebhookSettings) -> None:
    """Refuse a URL into a private network unless the platform allows such endpoints (see public_http)."""
    if not settings.allow_private_addresses and (reason := private_target(url)):
        raise ValueError(
            f"{reason}; endpoints must be on the public internet (webhooks.allow_private_addresses is off)"
        )


class WebhookEndpoints:
    def __init__(
        self, db: Database, settings: WebhookSettings, clock: Clock, due: Callable[[], None]
    ) -> None:
        """`due` wakes the dispatcher when a delivery should go out now (a replay, a test)."""
        self.db = db
        self.settings = settings
        self.clock = clock
        self.due = due

    def _checked_url(self, url: str) -> str:
        try:
            url = check_url(url)
            check_reachable(url, self.settings)
        except ValueError as exc:
            raise WebhookError(str(exc), field="url") from exc
        return url

    @staticmethod
    def _checked_description(text: str) -> str:
        try:
            return check_description(text)
        except ValueError as exc:
            raise WebhookError(str(exc), field="description") from exc

    async def create(
        self,
        account_id: int,
        url: str,
        event_types: list[str] | None = None,
        description: str = "",
        enabled: bool = True,
        *,
        actor: Actor,
    ) -> store.EndpointRow:
        """A new endpoint with a fresh signing secret; it receives the events logged from now on."""
        url = self._checked_url(url)
        description = self._checked_description(description)
        try:
            types = check_event_types(event_types or [])
        except ValueError as exc:
            raise WebhookError(str(exc), field="event_types") from exc
        now = self.clock.now()

        def work(conn: Connection) -> store.EndpointRow:
            row = store.create_endpoint(conn, account_id, url, types, description, new_secret(), now, enabled)
            details = {"url": url, "event_types": types, "enabled": enabled}
            record(
                conn,
                actor,
                "webhook.create",
                at=now,
                account_id=account_id,
                target=f"endpoint:{row.id}",
                details=details,
            )
            return row

        return await self.db.run(work)

    async def update(
        self,
        account_id: int | None,
        endpoint_id: int,
        changes: dict[str, Any],
        *,
        rotate_secret: bool = False,
        actor: Actor,
    ) -> store.EndpointRow:
        """Change url, event_types, description or enabled; `rotate_secret` replaces the signing secret."""
        changes = dict(changes)
        if "url" in changes:
            changes["url"] = self._checked_url(changes["url"])
        if "description" in changes:
            changes["description"] = self._checked_description(changes["description"])
        if "event_types" in changes:
            try:
                changes["event_types"] = check_event_types(changes["event_types"])
            except ValueError as exc:
                raise WebhookError(str(exc), field="event_types") from exc
        if rotate_secret:
            changes["secret"] = new_secret()
        now = self.clock.now()

        def work(conn: Connection) -> store.EndpointRow | None:
            row = store.update_endpoint(conn, account_id, endpoint_id, changes, now)
            if row is not None:
                # What changed, by name; the new values too, but never the signing secret.
                details = {"changed": sorted(changes), **{k: v for k, v in changes.items() if k != "secret"}}
                target = f"endpoint:{endpoint_id}"
                record(
                    conn,
                    actor,
                    "webhook.update",
                    at=now,
                    account_id=row.account_id,
                    target=target,
                    details=details,
                )
            return row

        row = await self.db.run(work)
        if row is None:
            raise self._unknown(account_id, endpoint_id)
        return row

    async def remove(self, account_id: int | None, endpoint_id: int, *, actor: Actor) -> None:
        """Remove the endpoint and its delivery log."""
        now = self.clock.now()

        def work(conn: Connection) -> bool:
            row = store.get_endpoint(conn, account_id, endpoint_id)
            if row is None or not store.delete_endpoint(conn, account_id, endpoint_id):
                return False
            target = f"endpoint:{endpoint_id}"
            details = {"url": row.url}
            record(
                conn,
                actor,
                "webhook.delete",
                at=now,
                account_id=row.account_id,
                target=target,
                details=details,
            )
            return True

        if not await self.db.run(work):
            raise self._unknown(account_id, endpoint_id)

    async def list(self, account_id: int | None = None) -> list[store.EndpointRow]:
        return await self.db.run(store.list_endpoints, account_id)

    async def get(self, account_id: int | None, endpoint_id: int) -> store.EndpointRow:
        row = await self.db.run(store.get_endpoint, account_id, endpoint_id)
        if row is None:
            raise self._unknown(account_id, endpoint_id)
        return row

    async def deliveries(
        self,
        account_id: int | None,
        endpoint_id: int,
        *,
        state: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[store.DeliveryRow]:
        """The endpoint's delivery log, newest first; `before_id` is the cursor."""
        await self.get(account_id, endpoint_id)
        return await self.db.run(
            store.list_deliveries, account_id, endpoint_id, state=state, before_id=before_id, limit=limit
        )

    async def delivery(self, account_id: int | None, endpoint_id: int, delivery_id: int) -> store.DeliveryRow:
        row = await self.db.run(store.get_delivery, account_id, endpoint_id, delivery_id)
        if row is None:
            raise WebhookError(f"no delivery {delivery_id} for webhook endpoint {endpoint_id}", status=404)
        return row

    async def replay(self, account_id: int | None, endpoint_id: int, delivery_id: int) -> store.DeliveryRow:
        """Send a delivery again now (same body and webhook-id) with a fresh retry period."""
        await self.delivery(account_id, endpoint_id, delivery_id)
        row = await self.db.run(store.replay, account_id, endpoint_id, delivery_id, self.clock.now())
        if row is None:
            raise WebhookError(
                "the delivery is being sent right now; replay it once that attempt is over", status=409
            )
        self.due()
        return row

    async def replay_many(
        self, account_id: int | None, endpoint_id: int, delivery_ids: list[int], *, failed: bool = False
    ) -> tuple[list[int], list[int]]:
        """Replay the given deliveries (and, with `failed`, every failed one); returns (replayed, not
        replayed: unknown or being sent right now)."""
        await self.get(account_id, endpoint_id)
        ids = list(dict.fromkeys(delivery_ids))
        if failed:
            rows = await self.db.run(
                store.list_deliveries, account_id, endpoint_id, state="failed", limit=100_000
            )
            ids += [r.id for r in rows if r.id not in ids]
        now = self.clock.now()
        replayed = [i for i in ids if await self.db.run(store.replay, account_id, endpoint_id, i, now)]
        if replayed:
            self.due()
        return replayed, sorted(set(ids) - set(replayed))

    async def send_test(self, account_id: int | None, endpoint_id: int) -> store.DeliveryRow:
        """Queue a test delivery to the endpoint; follow it in the delivery log."""
        endpoint = await self.get(account_id, endpoint_id)
        now = self.clock.now()
        body = test_payload(endpoint.id, now)
        new_id = await self.db.run(store.add_delivery, endpoint, TEST_EVENT, body, now)
        self.due()
        return await self.delivery(account_id, endpoint_id, new_id)

    @staticmethod
    def _unknown(account_id: int | None, endpoint_id: int) -> WebhookError:
        where = " in this account" if account_id is not None else ""
        return WebhookError(f"no webhook endpoint {endpoint_id}{where}", status=404)
