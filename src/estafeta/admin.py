"""Operator actions shared by the CLI, the demo and the tests: accounts, keys, sending domains."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from estafeta.auth import NewKey, create_api_key
from estafeta.compose import AddressError, parse_address
from estafeta.config import Settings
from estafeta.dkim import DkimKey, generate_key
from estafeta.store import accounts as store
from estafeta.store.db import Database


class AdminError(ValueError):
    """An operator request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str
    value: str
    purpose: str


def create_account(db: Database, name: str, now: datetime) -> store.AccountRow:
    if not name.strip():
        raise AdminError("an account needs a name")
    if db.call(store.find_account, name) is not None:
        raise AdminError(f"an account named {name!r} exists already")
    return db.call(store.create_account, name, now)


def resolve_account(db: Database, name_or_id: str) -> store.AccountRow:
    row = db.call(store.get_account, int(name_or_id)) if name_or_id.isdigit() else None
    row = row or db.call(store.find_account, name_or_id)
    if row is None:
        raise AdminError(f"no account {name_or_id!r}; see `estafeta accounts list`")
    return row


def new_api_key(db: Database, account_id: int, name: str, now: datetime) -> NewKey:
    return create_api_key(db, account_id, name, now)


def normalise_domain(name: str) -> str:
    try:
        return parse_address(f"postmaster@{name.strip().rstrip('.')}").domain
    except AddressError as exc:
        raise AdminError(f"{name!r} is not a valid domain: {exc.reason}") from exc


def add_domain(
    db: Database, settings: Settings, account_id: int, name: str, now: datetime, algorithm: str | None = None
) -> tuple[store.DomainRow, DkimKey]:
    """Register a sending domain and generate its DKIM key."""
    domain = normalise_domain(name)
    if db.call(store.find_domain, domain) is not None:
        raise AdminError(f"domain {domain} is registered already")
    key = generate_key(domain, algorithm=algorithm or settings.dkim_algorithm, bits=settings.dkim_rsa_bits)  # type: ignore[arg-type]
    row = db.call(store.add_domain, account_id, domain, key.selector, key.algorithm, key.private_key, now)
    return row, key


def domain_key(row: store.DomainRow) -> DkimKey:
    return DkimKey(row.name, row.dkim_selector, row.dkim_algorithm, row.dkim_private_key)  # type: ignore[arg-type]


def dns_records(row: store.DomainRow, settings: Settings) -> list[DnsRecord]:
    """What the domain's owner publishes so receivers can authenticate the mail."""
    key = domain_key(row)
    return [
        DnsRecord(key.record_name, "TXT", key.record_value, "DKIM public key"),
        DnsRecord(row.name, "TXT", "v=spf1 a mx ~all", "SPF: add this platform's sending IPs (ip4:…)"),
        DnsRecord(
            f"_dmarc.{row.name}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{row.name}", "DMARC policy"
        ),
    ]
