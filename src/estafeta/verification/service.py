"""The core's `verification` service: checks a sending domain's records, keeps its state, and tells the
accept path whether the domain may send.

States: `pending` (never verified), `verified`, `failing` (it was verified and a check now fails; it keeps
sending for `domains.verification_grace_hours`), `unverified` (failing past the grace period). A domain
sends only while `verified` or `failing`. Entering `failing` records a `domain_failing` event (webhooks)
and opens a review note for operators, so the sender hears of it before any mail is refused; then
`domain_unverified`, and `domain_verified` when it passes again (a first verification is answered to
whoever asked: `domains add`, `domains verify`, the API). The scheduler re-checks every domain each
`domains.recheck_minutes`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dns.asyncresolver
from sqlalchemy import Connection

from estafeta import audit
from estafeta.audit import Actor
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.domains import DomainError, DomainRow, dns_records, normalise_domain
from estafeta.reputation import flag_for_review
from estafeta.store import domain_checks as store
from estafeta.store.events import NewEvent, record
from estafeta.verification.publish import PublishError, publish
from estafeta.verification.records import DomainReport, Lookups, check_domain

log = logging.getLogger("estafeta.verification")

SENDING_STATES = ("verified", "failing")
_REFUSAL_TTL = 30.0  # seconds another process's state change may take to reach this one's accept path
_RECHECK_BATCH = 50


@dataclass(frozen=True)
class DomainStatus:
    domain: str
    account_id: int
    state: str
    checked_at: datetime | None
    failing_since: datetime | None
    sending_stops_at: datetime | None  # while failing
    report: DomainReport | None

    @property
    def may_send(self) -> bool:
        return self.state in SENDING_STATES

    def as_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat().replace("+00:00", "Z") if value else None

        return {
            "domain": self.domain,
            "state": self.state,
            "may_send": self.may_send,
            "checked_at": when(self.checked_at),
            "failing_since": when(self.failing_since),
            "sending_stops_at": when(self.sending_stops_at),
            "checks": self.report.as_json()["checks"] if self.report else [],
        }


def next_state(
    current: store.CheckRow | None, report: DomainReport, now: datetime, grace: timedelta
) -> tuple[str, datetime | None]:
    """(state, failing since) after a check; a check whose only failures are DNS errors changes nothing."""
    state = current.state if current else "pending"
    since = current.failing_since if current else None
    if report.verified:
        return "verified", None
    if all(c.status == "unknown" for c in report.checks if c.required and c.status != "ok"):
        return state, since
    if state == "verified":
        return "failing", now
    if state == "failing":
        since = since or now
        return ("unverified" if now - since >= grace else "failing"), since
    return state, None


def _reason(name: str, state: str, report: DomainReport | None) -> str:
    """Why mail is refused, short enough for one SMTP reply line: the first problem and how to fix it."""
    problems = report.problems() if report else ["its DNS records were never checked"]
    first = problems[0] if problems else "its last check failed"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    how = (
        f"publish the records `estafeta domains dns {name}` shows, then run "
        f"`estafeta domains verify {name}` or POST /v1/domains/{name}/verify"
    )
    if state == "unverified":
        return f"sending domain {name} failed verification: {first}{more}; {how}"
    return f"sending domain {name} is not verified yet: {first}{more}; {how}"


class DomainVerification:
    def __init__(
        self, db: Any, settings: Settings, clock: Clock, resolver: dns.asyncresolver.Resolver
    ) -> None:
        """`resolver` is the platform's: its name servers answer every lookup (uncached here)."""
        self.db = db
        self.settings = settings
        self.clock = clock
        self.lookups = Lookups(resolver)
        self.grace = timedelta(hours=settings.domains.verification_grace_hours)
        self._refusals: dict[str, tuple[str | None, float]] = {}

    async def check(self, row: DomainRow) -> DomainReport:
        """Every record of the domain as DNS answers now (nothing stored)."""
        return await check_domain(row, self.settings, self.lookups)

    async def _row(self, name: str, account_id: int | None) -> tuple[DomainRow, store.CheckRow | None]:
        found = await self.db.run(store.by_name, normalise_domain(name))
        if account_id is not None and (found is None or found[0].account_id != account_id):
            # another account's domain is not told apart from an unknown one
            raise DomainError(f"{normalise_domain(name)} is not a sending domain of this account")
        if found is None:
            raise DomainError(f"domain {name} is not registered")
        return found

    def _status(self, row: DomainRow, check: store.CheckRow | None) -> DomainStatus:
        state = check.state if check else "pending"
        since = check.failing_since if check else None
        report = DomainReport.from_json(check.report) if check and check.report else None
        stops = since + self.grace if state == "failing" and since else None
        return DomainStatus(
            row.name, row.account_id, state, check.checked_at if check else None, since, stops, report
        )

    async def status(self, name: str, account_id: int | None = None) -> DomainStatus:
        """The stored state and the last check's report; `DomainError` when the domain is not registered
        (to `account_id`, when given)."""
        return self._status(*await self._row(name, account_id))

    async def verify(self, name: str, account_id: int | None = None, *, actor: Actor) -> DomainStatus:
        """Check the domain's records now and store the outcome (`DomainError` as `status`)."""
        row, _ = await self._row(name, account_id)
        return await self._verify(row, actor)

    async def _verify(self, row: DomainRow, actor: Actor | None = None) -> DomainStatus:
        """`actor` asked for this check (the audit log says so); None for the platform's own checks."""
        report = await self.check(row)
        check = await self.db.run(self._save, row, report, self.clock.now(), actor)
        self._refusals.pop(row.name, None)
        return self._status(row, check)

    def _save(
        self, conn: Connection, row: DomainRow, report: DomainReport, now: datetime, actor: Actor | None
    ) -> store.CheckRow:
        current = store.get(conn, row.id, lock=True)
        state, since = next_state(current, report, now, self.grace)
        before = current.state if current else "pending"
        changed = state != before
        check = store.CheckRow(
            row.id,
            state,
            now if changed or current is None else current.changed_at,
            now,
            since,
            report.as_json(),
        )
        store.save(conn, check)
        if changed:
            self._announce(conn, row, before, check, report, now)
        if actor is not None:
            details = {"state": state, "previous_state": before, "problems": report.problems()}
            audit.record(
                conn,
                actor,
                "domain.verify",
                at=now,
                account_id=row.account_id,
                target=row.name,
                details=details,
            )
        return check

    def _announce(
        self,
        conn: Connection,
        row: DomainRow,
        before: str,
        check: store.CheckRow,
        report: DomainReport,
        now: datetime,
    ) -> None:
        data: dict[str, Any] = {"domain": row.name, "previous_state": before, "problems": report.problems()}
        if check.state == "failing":
            stops = now + self.grace
            data["sending_stops_at"] = stops.isoformat()
            reason = (
                f"sending domain {row.name} fails verification ({'; '.join(report.problems())}); "
                f"its mail is refused from {stops:%Y-%m-%d %H:%M} UTC unless its DNS is fixed"
            )
            flag_for_review(conn, row.account_id, "all", reason, now)
        if before != "pending":  # a first verification is answered to whoever asked for it
            record(conn, [NewEvent(row.account_id, f"domain_{check.state}", data)], now)
        log.info("domain %s: %s -> %s", row.name, before, check.state)

    async def setup(self, row: DomainRow) -> DomainStatus:
        """Right after registration: publish the records where the platform may (`domains.dns_update`, the
        sandbox), then verify. Publishing problems are logged; the domain then stays pending."""
        if self.settings.domains.dns_update:
            try:
                await publish(dns_records(row, self.settings), self.settings.domains.dns_update, self.lookups)
            except PublishError as exc:
                log.warning("domain %s: records not published: %s", row.name, exc)
        return await self._verify(row)

    async def recheck(self) -> int:
        """The scheduler's job: verify the domains whose last check is older than `recheck_minutes`."""
        before = self.clock.now() - timedelta(minutes=self.settings.domains.recheck_minutes)
        rows = await self.db.run(store.due, before, _RECHECK_BATCH)
        for row in rows:
            await self._verify(row)
        return len(rows)

    async def refusal(self, name: str) -> str | None:
        """Why mail from the registered domain `name` is refused, or None while it may send (the accept
        path asks; a state changed by another process shows within half a minute)."""
        cached = self._refusals.get(name)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        found = await self.db.run(store.by_name, name)
        if found is None:
            return None  # not registered: the accept path says so itself
        status = self._status(*found)
        reason = None if status.may_send else _reason(name, status.state, status.report)
        self._refusals[name] = (reason, time.monotonic() + _REFUSAL_TTL)
        return reason
