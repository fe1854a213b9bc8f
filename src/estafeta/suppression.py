"""Suppression: addresses and domains that must not be mailed, for one account or for every account.

The policy gate asks `screen()` once per accepted batch which recipients are suppressed and why. Delivery
outcomes and inbound reports ask `for_bounce()` / `for_complaint()` what a failure means for the address;
the store writes those entries in the same transaction as the event that caused them.

Which failures suppress what (the verdict's `scope`, decided by `estafeta.bounces.policy`):

=====================================  =================================================================
failure                                suppression
=====================================  =================================================================
a dead address: `user-unknown`,        the account's list and the global list (the address is gone)
`has-moved`, `no-such-domain` or
`not-accepting` said by a receiver
`no-such-domain` found by our own DNS  the domain, globally (`no-mx`: NXDOMAIN, null MX, no address)
`mailbox-disabled`                     as `suppression.disabled_mailbox` says: global, account or none
anything else (full, filtered, the     nothing; failures about the recipient that last (expired, late
sender's refusals, unrecognised …)     soft bounces) count towards `soft_bounce_limit` within
                                       `soft_bounce_days`, then the account's list
complaint                              the account's list, at once
spam-trap hit                          the address, globally; the hit is logged as `trap_hit`
=====================================  =================================================================
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from estafeta.audit import Actor, record
from estafeta.bounces.policy import Policy
from estafeta.bounces.reasons import Reason
from estafeta.clock import Clock
from estafeta.compose import AddressError, parse_address
from estafeta.config import SuppressionSettings
from estafeta.store import suppressions as store
from estafeta.store.db import Database
from estafeta.store.messages import Suppressed

SuppressionRow = store.SuppressionRow

REASONS = (
    "hard-bounce",
    "complaint",
    "unsubscribe",
    "manual",
    "spam-trap",
    "no-mx",
    "soft-bounce-persistent",
)
CSV_COLUMNS = ("value", "kind", "reason", "detail", "created_at")


class SuppressionError(ValueError):
    """A value or file that cannot go on a suppression list; `reason` says why, for the person who sent it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Value:
    kind: str  # address | domain
    value: str


def parse_value(text: str) -> Value:
    """An address (`user@example.com`) or a whole domain (`example.com`), normalised like recipients are."""
    text = text.strip()
    if not text:
        raise SuppressionError("the value is empty")
    try:
        if "@" in text:
            return Value("address", parse_address(text).email)
        return Value("domain", parse_address(f"postmaster@{text.rstrip('.')}").domain)
    except AddressError as exc:
        raise SuppressionError(exc.reason) from exc


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise SuppressionError(f"unknown reason {reason!r}; one of {', '.join(REASONS)}")
    return reason


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class SpamTraps:
    """The configured spam-trap addresses and domains."""

    def __init__(self, entries: Iterable[str]) -> None:
        values = [parse_value(entry) for entry in entries]
        self.addresses = {v.value.lower() for v in values if v.kind == "address"}
        self.domains = {v.value.lower() for v in values if v.kind == "domain"}

    def __contains__(self, recipient: object) -> bool:
        return isinstance(recipient, str) and (
            recipient.lower() in self.addresses or _domain(recipient) in self.domains
        )


def _rank(row: store.SuppressionRow) -> tuple[bool, bool]:
    """The entry to report when several match: an address before its domain, the account's before global."""
    return (row.kind != "address", row.account_id is None)


def screen(
    conn: Connection, account_id: int, recipients: Iterable[str], traps: SpamTraps, *, broadcast: bool = True
) -> dict[str, Suppressed]:
    """The policy gate's single check: which recipients must not be mailed, and why (one query).

    An `unsubscribe` entry (the person left all of the account's lists) holds for broadcast mail only:
    with `broadcast=False` it is passed over, so receipts and password resets still arrive.
    """
    found: dict[str, Suppressed] = {}
    listed: list[str] = []
    for recipient in dict.fromkeys(recipients):
        if recipient in traps:
            found[recipient] = Suppressed(recipient, "spam-trap", "global", trap=True)
        else:
            listed.append(recipient)
    keys = {r.lower() for r in listed} | {_domain(r) for r in listed}
    by_key: dict[str, list[store.SuppressionRow]] = {}
    for row in store.matching(conn, account_id, keys):
        by_key.setdefault(row.value.lower(), []).append(row)
    for recipient in listed:
        rows = by_key.get(recipient.lower(), []) + by_key.get(_domain(recipient), [])
        if not broadcast:
            rows = [row for row in rows if row.reason != "unsubscribe"]
        if rows:
            best = min(rows, key=_rank)
            found[recipient] = Suppressed(recipient, best.reason, best.scope, trap=best.reason == "spam-trap")
    return found


def global_entry(conn: Connection, value: Value) -> store.SuppressionRow | None:
    """The global entry covering a value (the address itself, or its domain), if any."""
    entry = store.get(conn, None, value.value)
    if entry is None and value.kind == "address":
        entry = store.get(conn, None, _domain(value.value))
    return entry


def soft_rule(settings: SuppressionSettings) -> store.SoftRule:
    return store.SoftRule(settings.soft_bounce_limit, timedelta(days=settings.soft_bounce_days))


def policy(settings: SuppressionSettings) -> Policy:
    """The operator's choices the bounce classifier applies."""
    return Policy(disabled_mailbox=settings.disabled_mailbox)


def for_bounce(
    account_id: int, recipient: str, scope: str, reason: str, detail: str, *, from_dns: bool = False
) -> list[store.NewSuppression]:
    """What a final failure means for the address: its verdict's scope (global, account or none), or the
    whole domain when our own resolver found that it takes no mail (`from_dns`)."""
    if reason == Reason.NO_SUCH_DOMAIN and from_dns and scope != "none":
        return [store.NewSuppression(None, "domain", _domain(recipient), "no-mx", detail)]
    if scope == "global":
        return [
            store.NewSuppression(account_id, "address", recipient, "hard-bounce", detail),
            store.NewSuppression(None, "address", recipient, "hard-bounce", detail),
        ]
    if scope == "account":
        return [store.NewSuppression(account_id, "address", recipient, "hard-bounce", detail)]
    return []


def for_complaint(account_id: int, recipient: str, detail: str) -> list[store.NewSuppression]:
    return [store.NewSuppression(account_id, "address", recipient, "complaint", detail)]


# -- CSV export and import -------------------------------------------------------------------------


def to_csv(rows: Iterable[store.SuppressionRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow((row.value, row.kind, row.reason, row.detail, row.created_at.isoformat()))
    return out.getvalue()


@dataclass(frozen=True)
class RowError:
    line: int
    value: str
    reason: str


def parse_csv(text: str, account_id: int | None) -> tuple[list[store.NewSuppression], list[RowError]]:
    """Entries from CSV with a header naming at least `value` (`reason` and `detail` are optional, other
    columns such as an export's `kind` and `created_at` are ignored). A file that is not readable CSV raises
    `SuppressionError`; rows that are wrong come back as errors, each with its line number."""
    reader = csv.DictReader(io.StringIO(text), strict=True)
    entries: list[store.NewSuppression] = []
    errors: list[RowError] = []
    try:
        header = [name.strip().lower() for name in reader.fieldnames or []]
        if "value" not in header:
            raise SuppressionError("the first line must be a header naming a `value` column")
        reader.fieldnames = header
        for row in reader:
            if None in row:
                errors.append(RowError(reader.line_num, "", "more fields than the header names"))
                continue
            raw_value = (row.get("value") or "").strip()
            try:
                value = parse_value(raw_value)
                reason = check_reason((row.get("reason") or "").strip() or "manual")
            except SuppressionError as exc:
                errors.append(RowError(reader.line_num, raw_value, exc.reason))
                continue
            detail = (row.get("detail") or "").strip()
            entries.append(store.NewSuppression(account_id, value.kind, value.value, reason, detail))
    except csv.Error as exc:
        raise SuppressionError(f"not readable as CSV (line {reader.line_num}): {exc}") from exc
    return entries, errors


@dataclass(frozen=True)
class ImportResult:
    added: int
    already_listed: int


def import_entries(
    conn: Connection, entries: list[store.NewSuppression], *, actor: str, now: datetime
) -> ImportResult:
    """Add every entry (in the caller's transaction: all or nothing); listed ones are counted, not changed."""
    added = sum(1 for e in entries if store.add(conn, e, actor=actor, now=now, note="import") is not None)
    return ImportResult(added, len(entries) - added)


class InvalidRows(SuppressionError):
    """A CSV file with rows that cannot be imported; nothing of it was."""

    def __init__(self, rows: list[RowError]) -> None:
        super().__init__(f"{len(rows)} row(s) are invalid; nothing was imported")
        self.rows = rows


class Suppressions:
    """The suppression lists as people edit them: an account's (`scope` is its id) or the global one
    (`scope` None). Every addition and removal names its `actor` in the suppression trail; changes to the
    global list are operator actions, in the audit log too (`estafeta.audit`)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def list(
        self,
        scope: int | None,
        *,
        search: str | None = None,
        reason: str | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[store.SuppressionRow]:
        return await self.db.run(
            store.list_entries, scope, search=search, reason=reason, after_id=after_id, limit=limit
        )

    async def global_entry(self, value: Value) -> store.SuppressionRow | None:
        """The global entry that also stops mail to an address (or a domain), if any."""
        return await self.db.run(global_entry, value)

    async def add(
        self, scope: int | None, text: str, *, reason: str = "manual", actor: Actor, note: str = ""
    ) -> tuple[store.SuppressionRow, bool]:
        """Suppress an address or domain; returns the entry and whether it is new (else it was there)."""
        value = parse_value(text)
        entry = store.NewSuppression(scope, value.kind, value.value, check_reason(reason))
        now = self.clock.now()

        def work(conn: Connection) -> store.SuppressionRow | None:
            row = store.add(conn, entry, actor=actor.name, now=now, note=note)
            if row is not None and scope is None:
                details = {"kind": value.kind, "reason": entry.reason, "note": note}
                record(conn, actor, "suppression.global_add", at=now, target=value.value, details=details)
            return row

        added = await self.db.run(work)
        if added is not None:
            return added, True
        existing = await self.db.run(store.get, scope, value.value)
        assert existing is not None
        return existing, False

    async def remove(
        self, scope: int | None, text: str, *, actor: Actor, note: str = ""
    ) -> tuple[Value, store.SuppressionRow | None]:
        """Take an entry off the list; the removed entry is None when the value was not on it."""
        value = parse_value(text)
        now = self.clock.now()

        def work(conn: Connection) -> store.SuppressionRow | None:
            row = store.remove(conn, scope, value.value, actor=actor.name, now=now, note=note)
            if row is not None and scope is None:
                details = {"kind": row.kind, "reason": row.reason, "note": note}
                record(conn, actor, "suppression.global_remove", at=now, target=value.value, details=details)
            return row

        return value, await self.db.run(work)

    async def recent_changes(self, scope: int | None, limit: int = 20) -> list[store.AuditRow]:
        """The latest additions and removals (the audit trail), newest first."""
        return await self.db.run(store.recent_audit, scope, limit)

    async def export_csv(self, scope: int | None) -> str:
        return to_csv(await self.list(scope))

    async def import_csv(self, scope: int | None, text: str, *, actor: Actor) -> ImportResult:
        """Add every row (all or nothing): `InvalidRows` lists the bad rows, `SuppressionError` says why a
        file is not readable CSV."""
        entries, errors = parse_csv(text, scope)
        if errors:
            raise InvalidRows(errors)
        now = self.clock.now()

        def work(conn: Connection) -> ImportResult:
            result = import_entries(conn, entries, actor=actor.name, now=now)
            if scope is None:
                details = {"added": result.added, "already_listed": result.already_listed}
                record(conn, actor, "suppression.global_import", at=now, target="global", details=details)
            return result

        return await self.db.run(work)
