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
from estafeta.plans import PLAN_LIMIT, DatabaseMeter, Meter, OverPlan, Tab
from estafeta.reputation import DAY, HOW_TO_RESUME, flag_for_review, sending_limit
from estafeta.store import messages as message_store
from estafeta.store import reputation as reputation_store
from estafeta.suppression import SpamTraps, screen


@dataclass
class AccountView:
    """An account's standing, warm-up usage and plan tab as one storing transaction sees them, counting
    what the transaction itself has admitted so far."""

    standings: dict[str, reputation_store.Standing]
    limit: int | None
    used: int
    tab: Tab


class PolicyGate:
    """Screens rows for suppressed recipients and refuses what the account's standing or limit forbids."""

    def __init__(self, settings: Settings, meter: Meter | None = None) -> None:
        """`meter` counts usage against the accounts' plans (by default in the database)."""
        self.settings = settings
        self.meter = meter or DatabaseMeter()
        self._traps = SpamTraps(settings.suppression.spam_traps)

    def admit(self, conn: Connection, entries: list[tuple[Rows, datetime]]) -> list[Rows | AcceptError]:
        """Each caller's rows as they are to be stored, or why they are refused, in the storing transaction.

        The transaction's callers are judged together, an account at a time in id order (so that two
        transactions lock account rows in the same order and never wait for each other in a circle): one
        standing and plan read, one suppression query and one counter update per account, whatever the
        number of messages; within an account, callers are judged in the order they came, each seeing
        what the earlier ones were allowed."""
        outcomes: list[Rows | AcceptError] = [rows for rows, _ in entries]
        by_account: dict[int, list[int]] = {}
        for index, (rows, _) in enumerate(entries):
            if rows:
                by_account.setdefault(rows[0].account_id, []).append(index)
        for account_id in sorted(by_account):
            indexes = by_account[account_id]
            view = self._account_view(conn, account_id, entries[indexes[0]][1])
            screened = iter(self._screen(conn, account_id, [row for i in indexes for row in entries[i][0]]))
            for index in indexes:
                rows = [next(screened) for _ in entries[index][0]]
                try:
                    outcomes[index] = self._judge(conn, view, rows, entries[index][1])
                except AcceptError as exc:
                    outcomes[index] = exc
            self.meter.settle(conn, view.tab)
        return outcomes

    def _judge(self, conn: Connection, view: AccountView, rows: Rows, now: datetime) -> Rows:
        """One caller's screened rows, checked against the account's standing, warm-up limit and plan."""
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
            self.meter.charge(conn, view.tab, sum(len(r.recipients) for r in rows), now)
        except OverPlan as exc:
            raise AcceptError("recipients", str(exc), status=429, smtp="452 4.5.3", kind=PLAN_LIMIT) from exc
        view.used += wanted
        return rows

    def _account_view(self, conn: Connection, account_id: int, now: datetime) -> AccountView:
        read = reputation_store.admission(conn, account_id)
        limit = sending_limit(read.tier, self.settings)
        used = 0
        if limit is not None:
            # Serialises a limited account's storing transactions (PostgreSQL; SQLite has one writer), so
            # two of them never both count the same headroom; the tier is read again once locked.
            limit = sending_limit(reputation_store.lock_account(conn, account_id), self.settings)
            used = reputation_store.usage(conn, account_id, now - DAY)
        return AccountView(read.standings, limit, used, self.meter.open_tab(account_id, read.plan))

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
