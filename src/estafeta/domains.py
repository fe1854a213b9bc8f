"""Sending domains: registering one generates its DKIM key; the owner publishes the DNS records shown.

The core's `domains` service is the only writer of sending domains; `estafeta.verification` checks the
published records and decides whether a domain may send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from estafeta.audit import Actor, record
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


def keys_to_publish(row: store.DomainRow) -> list[tuple[DkimKey, str]]:
    """Every DKIM key whose record must be in DNS, with its state (verification requires the active ones):
    pending (to be verified), active, retiring (mail signed with it is still on its way)."""
    return [(signing_key(row.name, k), k.state) for k in row.keys if k.state in PUBLISHED_STATES]


def dkim_records(row: store.DomainRow) -> list[DnsRecord]:
    return [
        DnsRecord(key.record_name, "TXT", key.record_value, f"DKIM public key: {key.algorithm}, {state}")
        for key, state in keys_to_publish(row)
    ]


def sending_addresses(settings: Settings) -> list[str]:
    """The source addresses of every IP pool (empty: mail leaves from the host's default address)."""
    return sorted({str(address) for pool in settings.ip_pools.values() for address in pool})


def spf_record(settings: Settings) -> str:
    """The SPF record that authorizes this platform: its pools' addresses, or else its host name's."""
    addresses = sending_addresses(settings)
    terms = [f"ip6:{a}" if ":" in a else f"ip4:{a}" for a in addresses] or [f"a:{settings.hostname}"]
    return f"v=spf1 {' '.join(terms)} ~all"


def dmarc_record(settings: Settings) -> str:
    return f"v=DMARC1; p=none; rua=mailto:{settings.dmarc_rua}"


def dns_records(row: store.DomainRow, settings: Settings) -> list[DnsRecord]:
    """The exact records that make the domain verified: the owner publishes DKIM, SPF and DMARC; the
    platform's operator publishes the return path's MX and the consent to receive the domain's DMARC
    reports at the platform's `rua` (RFC 7489 7.1)."""
    return [
        *dkim_records(row),
        DnsRecord(row.name, "TXT", spf_record(settings), "SPF: this platform's sending addresses"),
        DnsRecord(f"_dmarc.{row.name}", "TXT", dmarc_record(settings), "DMARC policy"),
        DnsRecord(
            f"{row.name}._report._dmarc.{settings.return_path_domain}",
            "TXT",
            "v=DMARC1",
            "DMARC reports may go to the platform (operator)",
        ),
        DnsRecord(
            settings.return_path_domain,
            "MX",
            f"10 {settings.hostname}.",
            "return path: bounces reach the platform (operator)",
        ),
    ]


class Domains:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        after_add: Callable[[store.DomainRow], Awaitable[object]] | None = None,
    ) -> None:
        """`after_add` runs once a domain is registered (the core passes verification's `setup`)."""
        self.db = db
        self.settings = settings
        self.clock = clock
        self.after_add = after_add

    async def add(
        self, account_id: int, name: str, algorithm: str | None = None, *, actor: Actor
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
        row = await self.db.run(_add_domain, account_id, domain, key, self.clock.now(), actor)
        if self.after_add is not None:
            await self.after_add(row)
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


def _add_domain(
    conn: Connection, account_id: int, name: str, key: DkimKey, now: datetime, actor: Actor
) -> store.DomainRow:
    """The domain and its first key, which signs at once (the domain's own checks decide whether it may
    send); later keys wait for DNS (`estafeta.dkim_keys`)."""
    row = store.add_domain(conn, account_id, name, now)
    first = key_store.add_key(conn, row.id, key.selector, key.algorithm, key.private_key, "active", now)
    details = {"selector": key.selector, "algorithm": key.algorithm}
    record(conn, actor, "domain.add", at=now, account_id=account_id, target=name, details=details)
    return replace(row, keys=(first,))
