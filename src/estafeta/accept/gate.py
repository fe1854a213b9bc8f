"""The policy gate: what may be queued, decided inside the transaction that stores it.

Suppressed recipients (account or global list, spam traps) are dropped before they are queued: the message
is still recorded, and each dropped recipient gets a `suppressed` event with the reason.

The gate also holds reputation (`estafeta.reputation`): mail for a paused or suspended stream is refused
(HTTP 403 `/problems/account-paused`; SMTP `451 4.7.1` while paused pending review, `550 5.7.1` when
suspended), and so is mail over the account's warm-up limit (HTTP 429 `/problems/sending-limit`, SMTP
`452 4.5.3`), and so is mail over the account's plan (`estafeta.plans`: HTTP 429 `/problems/plan-limit`,
SMTP `452 4.5.3`, naming the plan; the meter counts what passes). It runs after what the same transaction
already queued, so concurrent requests can never overshoot a limit together (on PostgreSQL a limited
account's row, and its usage counters, are locked for the transaction).
A message held by the link checks opens (or extends) a review of its account.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from estafeta.accept.commit import Rows
from estafeta.accept.errors import AcceptError
from estafeta.config import Settings
from estafeta.plans import PLAN_LIMIT, DatabaseMeter, Meter, OverPlan
from estafeta.reputation import DAY, HOW_TO_RESUME, flag_for_review, sending_limit
from estafeta.store import messages as message_store
from estafeta.store import reputation as reputation_store
from estafeta.suppression import SpamTraps, screen


@dataclass
class AccountView:
    """An account's standing and warm-up usage as one storing transaction sees them, counting what the
    transaction itself has queued so far."""

    standings: dict[str, reputation_store.Standing]
    limit: int | None
    used: int


class PolicyGate:
    """Screens rows for suppressed recipients and refuses what the account's standing or limit forbids."""

    def __init__(self, settings: Settings, meter: Meter | None = None) -> None:
        """`meter` counts usage against the accounts' plans (by default in the database)."""
        self.settings = settings
        self.meter = meter or DatabaseMeter()
        self._traps = SpamTraps(settings.suppression.spam_traps)

    def __call__(self, conn: Connection, rows: Rows, now: datetime, views: dict[int, AccountView]) -> Rows:
        """Screen the rows and check the account's standing and limit, in the storing transaction."""
        if not rows:
            return rows
        account_id = rows[0].account_id
        view = views.get(account_id)
        if view is None:
            view = views[account_id] = self._account_view(conn, account_id, now)
        rows = self._screen(conn, account_id, rows)
        for stream in dict.fromkeys(r.stream for r in rows):
            standing = view.standings[stream]
            if standing.state == "suspended":
                raise AcceptError(
                    "stream",
                    f"the account's {stream} sending is suspended after review ({standing.reason}); "
                    "contact the platform's administrators",
                    status=403,
                    smtp="550 5.7.1",
                    kind="account-paused",
                )
            if standing.state == "paused":
                raise AcceptError(
                    "stream",
                    f"the account's {stream} sending is paused ({standing.reason}); queued mail waits and "
                    f"may be cancelled; to resume, {HOW_TO_RESUME}",
                    status=403,
                    smtp="451 4.7.1",
                    kind="account-paused",
                )
        wanted = sum(len(r.recipients) for r in rows if not r.held)
        if view.limit is not None and wanted and view.used + wanted > view.limit:
            raise AcceptError(
                "recipients",
                f"the account may send to {view.limit} recipients per 24 hours during warm-up and has used "
                f"{view.used}; these {wanted} would exceed it. The limit rises after an automatic review "
                f"once {self.settings.warmup.review_at:.0%} of it is used with healthy bounce and complaint "
                "rates",
                status=429,
                smtp="452 4.5.3",
                kind="sending-limit",
            )
        try:
            self.meter.charge(conn, account_id, sum(len(r.recipients) for r in rows), now)
        except OverPlan as exc:
            raise AcceptError("recipients", str(exc), status=429, smtp="452 4.5.3", kind=PLAN_LIMIT) from exc
        view.used += wanted
        return rows

    def _account_view(self, conn: Connection, account_id: int, now: datetime) -> AccountView:
        limit = sending_limit(reputation_store.tier(conn, account_id), self.settings)
        used = 0
        if limit is not None:
            # Serialises a limited account's storing transactions (PostgreSQL; SQLite has one writer), so
            # two of them never both count the same headroom.
            reputation_store.lock_account(conn, account_id)
            limit = sending_limit(reputation_store.tier(conn, account_id), self.settings)
            used = reputation_store.usage(conn, account_id, now - DAY)
        return AccountView(reputation_store.standings(conn, account_id), limit, used)

    def _screen(self, conn: Connection, account_id: int, rows: Rows) -> Rows:
        """Suppressed recipients move from `recipients` to `suppressed` (one query per stream: an
        `unsubscribe` entry holds for broadcast mail only)."""
        screened = list(rows)
        for broadcast in (False, True):
            indexes = [i for i, row in enumerate(rows) if (row.stream == "broadcast") == broadcast]
            if not indexes:
                continue
            recipients = [r for i in indexes for r in rows[i].recipients]
            found = screen(conn, account_id, recipients, self._traps, broadcast=broadcast)
            if not found:
                continue
            for i in indexes:
                screened[i] = replace(
                    rows[i],
                    recipients=[r for r in rows[i].recipients if r not in found],
                    suppressed=[found[r] for r in rows[i].recipients if r in found],
                )
        return screened

    def flag_held(self, conn: Connection, rows: list[message_store.NewMessage], now: datetime) -> None:
        """Open (or extend) a review for the account of each held message, in the messages' transaction."""
        for row in rows:
            if row.held:
                reason = f"message {row.id} held: " + "; ".join(row.held)
                flag_for_review(conn, row.account_id, row.stream, reason, now)
