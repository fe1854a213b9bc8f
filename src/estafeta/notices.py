"""Reputation notices: a plain email to an account's contact address for each warning, pause, resumption,
suspension, review request and limit raise, sent through the platform's own accept path.

The notices go out from `notices.from`, whose domain is registered (with its own DKIM key) to a system
account created the first time a notice is sent; that account is never limited by warm-up. The job reads
the account-level events after a cursor kept in `platform_state`, so each notice is sent once per
database even with several processes (the cursor advances in the transaction that reads it; a notice
whose accept fails is logged and not retried).
"""

from __future__ import annotations

import logging
from typing import Any

from estafeta.accept import Accepter, AcceptError, Submission
from estafeta.clock import Clock
from estafeta.compose import Draft, parse_address
from estafeta.config import Settings
from estafeta.reputation import HOW_TO_RESUME
from estafeta.store import reputation as store
from estafeta.store.db import Database
from estafeta.system_senders import SystemSenders

log = logging.getLogger("estafeta.notices")

SYSTEM_ACCOUNT = "estafeta-notices"
SUBJECTS = {
    "account_warning": "Warning: your sending reputation needs attention",
    "account_paused": "Your broadcast sending is paused",
    "account_resumed": "Your sending is resumed",
    "account_suspended": "Your sending is suspended",
    "review_requested": "Your account is under review",
    "limit_raised": "Your sending limit was raised",
    "account_terminated": "Your account is terminated",
}


def _body(kind: str, name: str, data: dict[str, Any]) -> str:
    lines = [f"Hello {name},", "", SUBJECTS[kind] + "."]
    if data.get("stream"):
        lines.append(f"Stream: {data['stream']}.")
    if data.get("reason"):
        lines.append(f"Reason: {data['reason']}.")
    metrics = data.get("metrics") or {}
    if metrics:
        lines.append(
            f"Recent figures: hard-bounce rate {metrics['bounce_rate']:.2%}, complaint rate "
            f"{metrics['complaint_rate']:.3%}, over {metrics['outcomes']} deliveries."
        )
    if kind == "limit_raised":
        limit = data.get("per_24h")
        lines.append(
            f"New limit: {limit} recipients per 24 hours." if limit else "Your sending is no longer limited."
        )
    if kind in ("account_paused", "review_requested", "account_warning"):
        lines += ["", f"What to do: {HOW_TO_RESUME}."]
    lines += ["", "GET /v1/account/reputation shows your current state.", ""]
    return "\n".join(lines)


class Notices:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        accepter: Accepter,
        senders: SystemSenders,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.accepter = accepter
        self.senders = senders
        self._sender_id: int | None = None

    async def _sender(self) -> int:
        """The system account that owns the notices' domain (created on first use)."""
        if self._sender_id is None:
            self._sender_id = await self.senders.account_for(SYSTEM_ACCOUNT, self.settings.notices.from_)
        return self._sender_id

    async def send(self) -> int:
        """Mail every new notice; returns how many were accepted."""
        if not self.settings.notices.enabled:
            return 0
        pending = await self.db.run(store.take_notices, list(SUBJECTS))
        sent = 0
        for event in pending:
            contact = await self.db.run(store.contact, event.account_id)
            if contact is None or not contact[1] or event.account_id == self._sender_id:
                continue
            name, email = contact
            draft = Draft(
                from_=parse_address(self.settings.notices.from_),
                to=[parse_address(email)],
                subject=f"[Estafeta] {SUBJECTS[event.type]}",
                text=_body(event.type, name, event.data),
                tags=["reputation-notice"],
            )
            try:
                await self.accepter.accept(
                    await self._sender(), [Submission(draft, tags=["reputation-notice"])]
                )
            except AcceptError as exc:
                log.warning("notice to account %d not sent: %s", event.account_id, exc)
                continue
            sent += 1
        return sent
