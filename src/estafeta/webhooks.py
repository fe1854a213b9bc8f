"""Webhooks: every event an account's endpoints ask for is POSTed as JSON, signed per Standard Webhooks.

Two tasks, both independent of mail delivery: the fan-out turns new rows of the event log into one
delivery per interested endpoint (the outbox), and the dispatcher POSTs due deliveries with its own HTTP
client and short timeouts, so a slow or dead endpoint holds up nothing but its own deliveries. Failed
attempts are retried on a back-off schedule for `retry_for` (24 h by default), then marked `failed`; the
delivery log keeps each delivery's last status, error and response, and any delivery can be replayed.

Signatures: `webhook-id` (the delivery's id, the same on every retry and replay, for de-duplication),
`webhook-timestamp` (wall-clock Unix seconds of the attempt, which receivers compare with their own
clock) and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the endpoint secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from estafeta import __version__, public_http
from estafeta.clock import Clock, SystemClock
from estafeta.config import WebhookSettings
from estafeta.metrics import Metrics
from estafeta.outcome import retry_delay
from estafeta.store import webhooks as store
from estafeta.store.db import Database
from estafeta.store.events import EventRow
from estafeta.waits import wait_set

log = logging.getLogger("estafeta.webhooks")

SNIPPET_BYTES = 1024
TEST_EVENT = "webhook.test"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def render_payload(event: EventRow, message: store.MessageContext | None) -> str:
    """The JSON body for any event type: the event's fields, the message's stream/tags/metadata, its data."""
    body: dict[str, Any] = {
        "id": f"evt_{event.id}",
        "type": event.type,
        "timestamp": _iso(event.created_at),
        "account_id": event.account_id,
        "message_id": event.message_id,
        "recipient": event.recipient,
        "message": (
            {"stream": message.stream, "tags": message.tags, "metadata": message.metadata}
            if message
            else None
        ),
        "data": event.data,
    }
    return json.dumps(body, separators=(",", ":"))


def test_payload(endpoint_id: int, now: datetime) -> str:
    body = {
        "id": f"test_{secrets.token_hex(8)}",
        "type": TEST_EVENT,
        "timestamp": _iso(now),
        "data": {"endpoint_id": endpoint_id, "note": "a test delivery sent on request"},
    }
    return json.dumps(body, separators=(",", ":"))


def sign(secret: str, webhook_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, timestamp, body),
    }


def retry_at(
    schedule: list[float], failures: int, retry_from: datetime, now: datetime, retry_for: float
) -> datetime | None:
    """When to try again after the `failures`-th failed attempt, or None once the retry period is over.

    The last try is made at the end of the period, so a delivery is retried for the whole of it."""
    deadline = retry_from + timedelta(seconds=retry_for)
    if now >= deadline:
        return None
    return min(now + timedelta(seconds=retry_delay(schedule, failures)), deadline)


class Webhooks:
    """The fan-out and dispatcher tasks of one process."""

    def __init__(
        self,
        db: Database,
        settings: WebhookSettings,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
        signing_clock: Clock | None = None,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.signing_clock = signing_clock or SystemClock()
        self.metrics = metrics
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:webhooks:{id(self):x}"
        self.wakeup = asyncio.Event()
        self._gap: tuple[int, float] | None = None
        self._per_endpoint: dict[int, int] = {}
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._outcomes: list[tuple[store.Claimed, store.Outcome]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    # -- fan-out ---------------------------------------------------------------------------------
    async def fan_out_once(self) -> store.FanOut:
        """Turn the next batch of events into deliveries; waits `gap_grace` on a missing event id."""
        skip = None
        if self._gap is not None and time.monotonic() - self._gap[1] >= self.settings.gap_grace:
            skip = self._gap[0]
        result = await self.db.run(
            store.fan_out, self.settings.batch_size, render_payload, self.clock.now(), skip
        )
        if result.gap is None:
            self._gap = None
        elif self._gap is None or self._gap[0] != result.gap:
            self._gap = (result.gap, time.monotonic())
        if result.created:
            self.wakeup.set()
        return result

    async def _fan_out_loop(self) -> None:
        while True:
            try:
                result = await self.fan_out_once()
            except Exception:
                log.exception("webhook fan-out failed; trying again")
                result = store.FanOut(0, 0, None)
            if result.events < self.settings.batch_size:
                await asyncio.sleep(self.settings.poll_interval)

    # -- dispatch --------------------------------------------------------------------------------
    def _room(self, endpoint_id: int) -> int:
        return self.settings.endpoint_concurrency - self._per_endpoint.get(endpoint_id, 0)

    async def dispatch_once(self) -> int:
        """Lease due deliveries and start sending them; returns how many were started."""
        now = self.clock.now()
        lease = timedelta(seconds=3 * self.settings.timeout + 60)
        claimed = await self.db.run(
            store.claim, self.owner, now, now + lease, self.settings.batch_size, self._room
        )
        started = 0
        for delivery in claimed:
            if delivery.id in self._sending:
                continue  # our own lease ran out while the POST is still under way: never send twice
            self._per_endpoint[delivery.endpoint_id] = self._per_endpoint.get(delivery.endpoint_id, 0) + 1
            self._sending[delivery.id] = asyncio.create_task(
                self._attempt(delivery), name=f"webhook:{delivery.id}"
            )
            started += 1
        return started

    async def flush(self) -> None:
        """Record the outcomes of finished attempts, then free their endpoints' slots."""
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        try:
            await self.db.run(store.finish, self.owner, [outcome for _, outcome in batch])
        except Exception:
            self._outcomes[:0] = batch  # keep them; the next flush tries again
            raise
        for delivery, _ in batch:
            self._sent(delivery)

    def _record(self, delivery: store.Claimed, outcome: store.Outcome) -> None:
        """Queue an outcome for writing; outcomes that arrive while one batch is written share the next
        transaction (and fsync), as the accept path's group commit does."""
        self._outcomes.append((delivery, outcome))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all(), name="webhooks-flush")

    async def _flush_all(self) -> None:
        try:
            while self._outcomes:
                try:
                    await self.flush()
                except Exception:
                    log.exception("recording webhook attempts failed; trying again")
                    await asyncio.sleep(self.settings.poll_interval)
        finally:
            self._flusher = None

    def _sent(self, delivery: store.Claimed) -> None:
        self._sending.pop(delivery.id, None)
        left = self._per_endpoint.get(delivery.endpoint_id, 1) - 1
        if left > 0:
            self._per_endpoint[delivery.endpoint_id] = left
        else:
            self._per_endpoint.pop(delivery.endpoint_id, None)
        self.wakeup.set()  # its endpoint has room again, and the message's next event may go

    async def _dispatch_loop(self) -> None:
        while True:
            self.wakeup.clear()
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("webhook dispatch failed; trying again")
            await wait_set(self.wakeup, self.settings.poll_interval)

    async def _post(self, delivery: store.Claimed) -> tuple[int | None, str | None, str | None]:
        """(status, error, response snippet) of one POST."""
        assert self._client is not None
        headers = {
            "content-type": "application/json",
            "user-agent": f"Estafeta-Webhooks/{__version__}",
            **sign(delivery.secret, f"whd_{delivery.id}", self.signing_clock.now(), delivery.payload),
        }
        try:
            async with self._client.stream(
                "POST", delivery.url, content=delivery.payload.encode(), headers=headers
            ) as response:
                head = b""
                async for chunk in response.aiter_bytes():
                    head += chunk
                    if len(head) >= SNIPPET_BYTES:
                        break
                snippet = head[:SNIPPET_BYTES].decode("utf-8", errors="replace")
                ok = 200 <= response.status_code < 300
                return response.status_code, None if ok else f"HTTP {response.status_code}", snippet
        except httpx.TimeoutException:
            return None, f"timed out after {self.settings.timeout:g}s", None
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__, None

    async def _attempt(self, delivery: store.Claimed) -> None:
        """POST once and queue the outcome; whatever happens, the endpoint's slot is given back (once the
        outcome is written, or at once when there is none to write)."""
        recorded = False
        try:
            try:
                status, error, snippet = await self._post(delivery)
            except Exception as exc:  # e.g. a URL the client cannot use: a failed attempt like any other
                log.exception("webhook delivery %d to endpoint %d failed", delivery.id, delivery.endpoint_id)
                status, error, snippet = None, f"{type(exc).__name__}: {exc}"[:500], None
            delivered = error is None
            now = self.clock.now()
            next_at = None
            if not delivered:
                next_at = retry_at(
                    self.settings.retry_schedule,
                    delivery.attempts + 1,
                    delivery.retry_from,
                    now,
                    self.settings.retry_for,
                )
            if self.metrics is not None:
                outcome = "delivered" if delivered else "retrying" if next_at else "failed"
                self.metrics.webhook_attempts.labels(outcome).inc()
            self._record(
                delivery, store.Outcome(delivery.id, now, delivered, status, error, snippet, next_at)
            )
            recorded = True
        finally:
            if not recorded:  # cancelled, or failed before an outcome: the lease runs out and it is retried
                self._sent(delivery)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        timeout = self.settings.timeout
        self._client = public_http.client(
            httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            httpx.Limits(max_connections=200, max_keepalive_connections=50),
            allow_private=self.settings.allow_private_addresses,
        )
        self._tasks = [
            asyncio.create_task(self._fan_out_loop(), name="webhooks-fanout"),
            asyncio.create_task(self._dispatch_loop(), name="webhooks-dispatch"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop both loops, give POSTs under way `grace` seconds, give back the leases of the rest."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        sending = dict(self._sending)
        unfinished: set[asyncio.Task[None]] = set()
        if sending:
            _, unfinished = await asyncio.wait(sending.values(), timeout=grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._flusher is not None:
            await asyncio.wait({self._flusher}, timeout=grace)
        with contextlib.suppress(Exception):  # what cannot be written now is retried by lease expiry
            await self.flush()
        abandoned = [d for d, task in sending.items() if task in unfinished]
        await self.db.run(store.release, self.owner, abandoned)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
