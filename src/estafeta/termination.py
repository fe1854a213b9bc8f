"""Terminating an account: an operator's last word on a sender (abuse, fraud, phishing).

In one transaction: the account's status becomes `terminated` with who, when and why; every API key and
SMTP credential is revoked; unfinished campaigns are cancelled; both streams are suspended (the accept
gate refuses new mail, the queue claims none); every queued, deferred or held recipient is cancelled,
one `cancelled` event each, including entries a delivery worker holds at that moment (its lease is taken,
so its outcome no longer counts); an open review is closed as rejected; and an `account_terminated` event
records it. Delivery workers learn of terminations when woken or at their next poll and check each entry's
account right before sending it, so nothing of the account is sent afterwards: only an SMTP transaction
already under way at that instant can finish. Keys and logins of a terminated account are never accepted
again, even if someone creates new ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection

from estafeta import audit
from estafeta.audit import Actor
from estafeta.auth import ApiKeys
from estafeta.clock import Clock
from estafeta.smtp.credentials import SmtpCredentials
from estafeta.store import abuse as store
from estafeta.store import reputation as reputation_store
from estafeta.store.accounts import get_account
from estafeta.store.db import Database
from estafeta.store.events import NewEvent, record


class TerminationError(Exception):
    """The account does not exist (404) or is terminated already (409)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class Terminations:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        api_keys: ApiKeys,
        smtp_credentials: SmtpCredentials,
        *,
        stopped: Callable[[], None] = lambda: None,
    ) -> None:
        """`stopped` wakes delivery, so that workers holding the account's mail learn of it at once."""
        self.db = db
        self.clock = clock
        self.api_keys = api_keys
        self.smtp_credentials = smtp_credentials
        self.stopped = stopped

    async def terminate(self, account_id: int, actor: Actor, reason: str) -> dict[str, Any]:
        """Terminate the account (see the module docstring); returns what was done."""
        result = await self.db.run(self._terminate, account_id, actor, reason)
        await self.api_keys.forget(result.pop("key_prefixes"))
        await self.smtp_credentials.forget(result.pop("usernames"))
        self.stopped()
        return result

    def _terminate(self, conn: Connection, account_id: int, who: Actor, reason: str) -> dict[str, Any]:
        now = self.clock.now()
        actor = who.name
        if get_account(conn, account_id) is None:
            raise TerminationError(f"no account {account_id}", 404)
        reputation_store.lock_account(conn, account_id)
        if not store.terminate(conn, account_id, actor, reason, now):
            raise TerminationError(f"account {account_id} is terminated already", 409)
        why = f"account terminated: {reason}"
        prefixes, usernames = store.revoke_credentials(conn, account_id, now)
        campaigns = store.stop_campaigns(conn, account_id, now)
        for stream in ("transactional", "broadcast"):
            reputation_store.set_standing(conn, account_id, stream, "suspended", why, actor, now)
        cancelled = reputation_store.set_entries(
            conn,
            account_id,
            now,
            from_states=reputation_store.CANCELLABLE,
            to_state="cancelled",
            event="cancelled",
            data={"by": actor, "reason": why},
            leased_too=True,
        )
        review = reputation_store.open_review(conn, account_id)
        if review is not None:
            reputation_store.decide(conn, review.id, "rejected", actor, why, now)
        summary = {
            "cancelled": cancelled,
            "campaigns_cancelled": campaigns,
            "api_keys_revoked": len(prefixes),
            "smtp_credentials_revoked": len(usernames),
            "review_closed": review.id if review is not None else None,
        }
        record(
            conn,
            [NewEvent(account_id, "account_terminated", {"by": actor, "reason": reason, **summary})],
            now,
        )
        details = {"reason": reason, **summary}
        audit.record(
            conn,
            who,
            "account.terminate",
            at=now,
            account_id=account_id,
            target=f"account:{account_id}",
            details=details,
        )
        found = store.termination(conn, account_id)
        assert found is not None
        return {
            "account_id": account_id,
            "status": store.TERMINATED,
            **asdict(found),
            **summary,
            "key_prefixes": prefixes,
            "usernames": usernames,
        }

    async def termination(self, account_id: int) -> store.Termination | None:
        """Who terminated the account, when and why; None while it is not terminated."""
        return await self.db.run(store.termination, account_id)
