"""Sending domains: registering one generates its DKIM key; the owner publishes the DNS records shown.

The core's `domains` service is the only writer of sending domains (verification of the published records
belongs here too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from estafeta.clock import Clock
from estafeta.compose import AddressError, parse_address
from estafeta.config import Settings
from estafeta.dkim import DkimKey, generate_key
from estafeta.store import accounts as store
from estafeta.store import dkim_keys as key_store
from estafeta.store.db import Database

DomainRow = store.DomainRow
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


class DomainError(ValueError):
    """A domain request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str
    value: str
    purpose: str


def normalise_domain(name: str) -> str:
    """A domain as recipients' domains are normalised (IDNA, lower case, no trailing dot)."""
    try:
        return parse_address(f"postmaster@{name.strip().rstrip('.')}").domain
    except AddressError as exc:
        raise DomainError(f"{name!r} is not a valid domain: {exc.reason}") from exc


PUBLISHED_STATES = ("pending", "active", "retiring")  # keys whose record must be in DNS


def signing_key(domain: str, row: key_store.DkimKeyRow) -> DkimKey:
    return DkimKey(domain, row.selector, row.algorithm, row.private_key)  # type: ignore[arg-type]


def dkim_records(row: store.DomainRow) -> list[DnsRecord]:
    """The DKIM TXT record of every key that must be published: pending (to be verified), active, retiring
    (mail signed with it is still on its way)."""
    records = []
    for key_row in row.keys:
        if key_row.state in PUBLISHED_STATES:
            key = signing_key(row.name, key_row)
            purpose = f"DKIM public key: {key.algorithm}, {key_row.state}"
            records.append(DnsRecord(key.record_name, "TXT", key.record_value, purpose))
    return records


def dns_records(row: store.DomainRow, settings: Settings) -> list[DnsRecord]:
    """What the domain's owner publishes so receivers can authenticate the mail (and send DMARC reports
    to the platform's inbound listener)."""
    return [
        *dkim_records(row),
        DnsRecord(row.name, "TXT", "v=spf1 a mx ~all", "SPF: add this platform's sending IPs (ip4:…)"),
        DnsRecord(
            f"_dmarc.{row.name}", "TXT", f"v=DMARC1; p=none; rua=mailto:{settings.dmarc_rua}", "DMARC policy"
        ),
    ]


class Domains:
    def __init__(self, db: Database, settings: Settings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    async def add(
        self, account_id: int, name: str, algorithm: str | None = None
    ) -> tuple[store.DomainRow, DkimKey]:
        """Register a sending domain of the account and generate its DKIM key."""
        if algorithm not in (None, *ALGORITHMS):
            raise DomainError("--algorithm must be rsa-sha256 or ed25519-sha256")
        domain = normalise_domain(name)
        if await self.find(domain) is not None:
            raise DomainError(f"domain {domain} is registered already")
        key = await asyncio.to_thread(  # an RSA key takes a while
            generate_key,
            domain,
            algorithm=algorithm or self.settings.dkim_algorithm,  # type: ignore[arg-type]
            bits=self.settings.dkim_rsa_bits,
        )
        row = await self.db.run(_add_domain, account_id, domain, key, self.clock.now())
        return row, key

    async def find(self, name: str) -> store.DomainRow | None:
        """The registered domain of that (normalised) name, if any."""
        return await self.db.run(store.find_domain, name)

    async def lookup(self, name: str) -> store.DomainRow:
        """A domain as typed by a person (normalised first); `DomainError` when it is not registered."""
        row = await self.find(normalise_domain(name))
        if row is None:
            raise DomainError(f"domain {name} is not registered")
        return row

    async def list(self, account_id: int | None = None) -> list[store.DomainRow]:
        return await self.db.run(store.list_domains, account_id)


def _add_domain(conn: Connection, account_id: int, name: str, key: DkimKey, now: datetime) -> store.DomainRow:
    """The domain and its first key, which signs at once (the domain's own checks decide whether it may
    send); later keys wait for DNS (`estafeta.dkim_keys`)."""
    row = store.add_domain(conn, account_id, name, now)
    first = key_store.add_key(conn, row.id, key.selector, key.algorithm, key.private_key, "active", now)
    return replace(row, keys=(first,))
