"""Sending domains: registering one generates its DKIM key; the owner publishes the DNS records shown.

The core's `domains` service is the only writer of sending domains (verification of the published records
belongs here too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from estafeta.clock import Clock
from estafeta.compose import AddressError, parse_address
from estafeta.config import Settings
from estafeta.dkim import DkimKey, generate_key
from estafeta.store import accounts as store
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


def domain_key(row: store.DomainRow) -> DkimKey:
    return DkimKey(row.name, row.dkim_selector, row.dkim_algorithm, row.dkim_private_key)  # type: ignore[arg-type]


def dns_records(row: store.DomainRow, settings: Settings) -> list[DnsRecord]:
    """What the domain's owner publishes so receivers can authenticate the mail (and send DMARC reports
    to the platform's inbound listener)."""
    key = domain_key(row)
    return [
        DnsRecord(key.record_name, "TXT", key.record_value, "DKIM public key"),
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
        row = await self.db.run(
            store.add_domain,
            account_id,
            domain,
            key.selector,
            key.algorithm,
            key.private_key,
            self.clock.now(),
        )
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
