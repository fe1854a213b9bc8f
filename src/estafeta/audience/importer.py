"""CSV import of contacts: validation report per row, and the signs of a bought or scraped list.

A file has a header row with an `email` column; every other column becomes a contact attribute. Rows are
validated like every address at the edge (email-validator, IDNA); the report names each rejected row and
why. Imported lists are also checked for what distinguishes a list people signed up to from one that was
bought or harvested: many role accounts, many invalid addresses, alphabetical order, spam-trap-like
addresses, no record of consent. Those are flagged, not refused: the sender decides, knowing the risk.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from estafeta.audience.consent import Consent, ConsentRecord
from estafeta.compose import AddressError, parse_address
from estafeta.store.audience import ListRow, Subscribed

ROLE_ACCOUNTS = frozenset(
    {
        "abuse", "admin", "administrator", "billing", "contact", "enquiries", "hello", "help", "hostmaster",
        "hr", "info", "jobs", "marketing", "no-reply", "noc", "noreply", "office", "postmaster", "privacy",
        "sales", "security", "support", "team", "webmaster",
    }
)  # fmt: skip
TRAP_WORDS = ("spamtrap", "spam-trap", "honeypot", "trap")
CONSENT_COLUMNS = (
    "consent",
    "opt_in",
    "optin",
    "opted_in",
    "signup",
    "signed_up",
    "subscribed_at",
    "consent_at",
)
ROLE_SHARE = 0.10
INVALID_SHARE = 0.05
SORTED_MINIMUM = 50


@dataclass(frozen=True)
class ImportRow:
    line: int
    email: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class RowProblem:
    line: int
    value: str
    reason: str


@dataclass(frozen=True)
class Flag:
    """A sign that the list may not be opt-in; `count` rows show it."""

    code: str
    message: str
    count: int


@dataclass
class ParsedCsv:
    rows: list[ImportRow] = field(default_factory=list)
    invalid: list[RowProblem] = field(default_factory=list)
    duplicates: int = 0
    columns: list[str] = field(default_factory=list)


class CsvError(ValueError):
    """The file as a whole cannot be imported (no header, no email column, not CSV)."""


def parse_csv(text: str) -> ParsedCsv:
    """Validate every row; addresses are normalised, attributes are the other non-empty columns."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvError(
            "the file is empty; the first row must name the columns, one of them `email`"
        ) from None
    except csv.Error as exc:
        raise CsvError(f"not a CSV file: {exc}") from None
    columns = [name.strip() for name in header]
    lowered = [name.lower() for name in columns]
    if "email" not in lowered:
        raise CsvError(f"no `email` column in the header row ({', '.join(columns) or 'empty'})")
    email_at = lowered.index("email")
    parsed = ParsedCsv(columns=columns)
    seen: set[str] = set()
    try:
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            raw = values[email_at].strip() if email_at < len(values) else ""
            try:
                address = parse_address(raw)
            except AddressError as exc:
                parsed.invalid.append(RowProblem(line, raw, exc.reason))
                continue
            if address.display_name:
                parsed.invalid.append(
                    RowProblem(line, raw, "give the bare address; names go in other columns")
                )
                continue
            key = address.email.lower()
            if key in seen:
                parsed.duplicates += 1
                continue
            seen.add(key)
            attributes = {
                name: value.strip()
                for index, (name, value) in enumerate(zip(columns, values, strict=False))
                if index != email_at and name and value.strip()
            }
            parsed.rows.append(ImportRow(line, address.email, attributes))
    except csv.Error as exc:
        raise CsvError(f"line {reader.line_num}: {exc}") from None
    return parsed


def bought_list_flags(parsed: ParsedCsv, spam_traps: Sequence[str] = ()) -> list[Flag]:
    """Heuristics that a list was bought, rented or scraped rather than collected with consent."""
    flags: list[Flag] = []
    valid = len(parsed.rows)
    total = valid + len(parsed.invalid)
    roles = [r for r in parsed.rows if r.email.partition("@")[0].lower() in ROLE_ACCOUNTS]
    if roles and len(roles) >= 3 and len(roles) / max(valid, 1) >= ROLE_SHARE:
        flags.append(
            Flag(
                "role-addresses",
                f"{len(roles)} of {valid} addresses ({len(roles) / valid:.0%}) are role accounts such as "
                f"{roles[0].email}; people rarely subscribe with those, harvested lists are full of them",
                len(roles),
            )
        )
    if total and len(parsed.invalid) >= 3 and len(parsed.invalid) / total >= INVALID_SHARE:
        flags.append(
            Flag(
                "invalid-addresses",
                f"{len(parsed.invalid)} of {total} rows ({len(parsed.invalid) / total:.0%}) are not valid "
                "addresses; a list collected through a form with confirmation has almost none",
                len(parsed.invalid),
            )
        )
    emails = [r.email.lower() for r in parsed.rows]
    if len(emails) >= SORTED_MINIMUM and emails == sorted(emails):
        flags.append(
            Flag(
                "alphabetical-order",
                f"all {len(emails)} addresses are in alphabetical order, as in scraped or purchased dumps; "
                "sign-ups arrive in time order",
                len(emails),
            )
        )
    traps = {t.lower() for t in spam_traps}
    trap_like = [
        r
        for r in parsed.rows
        if any(word in r.email.partition("@")[0].lower() for word in TRAP_WORDS)
        or r.email.lower() in traps
        or r.email.partition("@")[2].lower() in traps
    ]
    if trap_like:
        flags.append(
            Flag(
                "spam-trap-like",
                f"{len(trap_like)} addresses look like spam traps (e.g. {trap_like[0].email}); a single hit "
                "can block all of the account's mail",
                len(trap_like),
            )
        )
    if valid and not any(c.lower() in CONSENT_COLUMNS for c in parsed.columns):
        flags.append(
            Flag(
                "no-consent-record",
                "the file has no column saying when or how each contact agreed (e.g. `consent_at`); keep "
                "that record, mailbox providers and the law ask for it",
                valid,
            )
        )
    return flags


@dataclass(frozen=True)
class ImportReport:
    """What an import did; `invalid` and `flags` are the validation report."""

    rows: int
    added: int
    already_on_list: int
    kept_unsubscribed: int
    awaiting_confirmation: int
    duplicates: int
    invalid: list[RowProblem]
    flags: list[Flag]


async def import_csv(
    consent: Consent,
    account_id: int,
    mailing_list: ListRow,
    text: str,
    record: ConsentRecord,
    *,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 2000,
) -> ImportReport:
    """Validate a CSV file and subscribe its valid rows in chunks, calling `progress(done, total)` after
    each. Addresses that unsubscribed stay unsubscribed; on a double opt-in list, imported contacts must
    confirm unless `record.confirmed` says they already did."""
    parsed = parse_csv(text)
    flags = bought_list_flags(parsed, consent.settings.suppression.spam_traps)
    outcomes: list[Subscribed] = []
    total = len(parsed.rows)
    if progress is not None:
        progress(0, total)
    for start in range(0, total, chunk):
        rows = parsed.rows[start : start + chunk]
        outcomes += await consent.subscribe(
            account_id, mailing_list, [(r.email, r.attributes) for r in rows], record
        )
        if progress is not None:
            progress(min(start + chunk, total), total)
    return ImportReport(
        rows=total + len(parsed.invalid) + parsed.duplicates,
        added=sum(1 for o in outcomes if o.outcome in ("new", "renewed")),
        already_on_list=sum(1 for o in outcomes if o.outcome == "unchanged"),
        kept_unsubscribed=sum(1 for o in outcomes if o.outcome == "kept-unsubscribed"),
        awaiting_confirmation=sum(1 for o in outcomes if o.status == "unconfirmed"),
        duplicates=parsed.duplicates,
        invalid=parsed.invalid,
        flags=flags,
    )
