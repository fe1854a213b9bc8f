"""DKIM key rotation and dual signing: which keys of a domain sign, and when a key may leave DNS.

A new key (`rotate` replaces the domain's key of that algorithm, `add` gives the domain a second algorithm
for dual signing) is `pending` under a new dated selector until the scheduled `check` finds its exact
record in DNS; only then does it sign (`active`), and the key it replaces becomes `retiring`. A retiring key
stays published until no unfinished delivery carries a signature made with it (every message records the
keys that signed it), then it is `retired` and the operator is told its record may be removed (event
`domain.key_retired`, which webhooks deliver, and `estafeta domains keys`).

Accepting processes cache a domain's signers for `SIGNER_REFRESH`: a key that became active signs within
that time, and a retiring key is only retired once every cache has let it go (twice that time after).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from estafeta import audit
from estafeta.audit import Actor
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.delivery.mx import make_resolver
from estafeta.dkim import DkimKey, DkimSigner, generate_key
from estafeta.domains import ALGORITHMS, DnsRecord, DomainError, DomainRow, Domains, signing_key
from estafeta.store import accounts as account_store
from estafeta.store import dkim_keys as store
from estafeta.store.db import Database
from estafeta.store.events import NewEvent, record
from estafeta.verification.publish import PublishError, publish, withdraw
from estafeta.verification.records import Lookups

log = logging.getLogger("estafeta.dkim_keys")

DkimKeyRow = store.DkimKeyRow
SIGNER_REFRESH = timedelta(seconds=60)
KEY_ACTIVE = "domain.key_active"
KEY_RETIRED = "domain.key_retired"
_LOOKUP_TIMEOUT = 2.0


class KeyStateError(DomainError):
    """The domain's keys are not in a state that allows the request (e.g. a key already pending)."""


@dataclass(frozen=True)
class DomainSigner:
    """Signs a domain's mail with each of its active keys (RSA first, so an Ed25519 signature is on top)."""

    account_id: int
    signers: tuple[DkimSigner, ...]
    key_ids: str  # " 3 7 ": what `messages.dkim_keys` records
    loaded_at: datetime

    def sign(self, raw: bytes) -> bytes:
        for signer in self.signers:
            raw = signer.sign(raw)
        return raw

    async def sign_async(self, raw: bytes) -> bytes:
        """`sign` for an event loop (`DkimSigner.sign_async`)."""
        for signer in self.signers:
            raw = await signer.sign_async(raw)
        return raw


def domain_signer(row: DomainRow, clock: Clock) -> DomainSigner:
    active = sorted(
        (k for k in row.keys if k.state == "active"), key=lambda k: (k.algorithm != "rsa-sha256", k.id)
    )
    return DomainSigner(
        row.account_id,
        tuple(DkimSigner(signing_key(row.name, key), clock=clock) for key in active),
        " " + " ".join(str(key.id) for key in active) + " " if active else "",
        clock.now(),
    )


@dataclass(frozen=True)
class KeyStatus:
    """One key as `estafeta domains keys` and `GET /v1/domains/{d}/keys` show it."""

    key: DkimKeyRow
    record: DnsRecord
    unfinished: int  # deliveries that may still be sent with a signature by this key

    @property
    def advice(self) -> str:
        if self.key.state == "pending":
            return f"publish {self.record.name} TXT; it signs once the record is seen in DNS"
        if self.key.state == "retiring":
            return f"keep {self.record.name}: {self.unfinished} unfinished deliveries carry its signature"
        if self.key.state == "retired":
            return f"{self.record.name} may be removed from DNS"
        return "signs"


def _record(domain: str, key: DkimKeyRow) -> DnsRecord:
    public = signing_key(domain, key)
    return DnsRecord(public.record_name, "TXT", public.record_value, f"DKIM public key: {key.algorithm}")


def new_selector(taken: set[str], algorithm: str, now: datetime) -> str:
    """`est` + the date + r (RSA) or e (Ed25519), with -2, -3… when that selector was used already."""
    base = f"est{now:%Y%m%d}{'e' if algorithm == 'ed25519-sha256' else 'r'}"
    selector, n = base, 1
    while selector in taken:
        n += 1
        selector = f"{base}-{n}"
    return selector


class DkimKeys:
    def __init__(self, db: Database, settings: Settings, clock: Clock, domains: Domains) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.domains = domains

    async def _domain(self, name: str, account_id: int | None) -> DomainRow:
        """The domain as typed; with `account_id`, it must be that account's (else it is "not registered")."""
        row = await self.domains.lookup(name)
        if account_id is not None and row.account_id != account_id:
            raise DomainError(f"domain {name} is not registered")
        return row

    async def rotate(
        self, name: str, algorithm: str | None = None, *, account_id: int | None = None, actor: Actor
    ) -> tuple[DomainRow, DkimKeyRow, DnsRecord]:
        """A new pending key replacing the active one of `algorithm` (the domain's only algorithm when
        not given) once its record is in DNS."""
        row = await self._domain(name, account_id)
        active = {k.algorithm for k in row.keys if k.state == "active"}
        if algorithm is None:
            if len(active) != 1:
                both = " and ".join(sorted(active))
                raise KeyStateError(f"{row.name} signs with {both}: say which key to rotate (--algorithm)")
            algorithm = next(iter(active))
        elif algorithm not in active:
            raise KeyStateError(f"{row.name} has no active {algorithm} key to rotate; add one with add-key")
        return await self._new_key(row, algorithm, actor, "domain.key_rotate")

    async def add(
        self, name: str, algorithm: str, *, account_id: int | None = None, actor: Actor
    ) -> tuple[DomainRow, DkimKeyRow, DnsRecord]:
        """A pending key of an algorithm the domain does not sign with yet: once it is in DNS, the domain's
        mail carries two signatures (dual signing: Ed25519 beside RSA for receivers that lack Ed25519)."""
        row = await self._domain(name, account_id)
        if algorithm not in ALGORITHMS:
            raise DomainError("the algorithm must be rsa-sha256 or ed25519-sha256")
        if any(k.algorithm == algorithm and k.state in ("pending", "active") for k in row.keys):
            raise KeyStateError(f"{row.name} has a {algorithm} key already; rotate it with rotate-key")
        return await self._new_key(row, algorithm, actor, "domain.key_add")

    async def _new_key(
        self, row: DomainRow, algorithm: str, actor: Actor, action: str
    ) -> tuple[DomainRow, DkimKeyRow, DnsRecord]:
        if any(k.algorithm == algorithm and k.state == "pending" for k in row.keys):
            raise KeyStateError(f"{row.name} has a pending {algorithm} key: publish its record first")
        now = self.clock.now()
        selector = new_selector({k.selector for k in row.keys}, algorithm, now)
        key: DkimKey = generate_key(
            row.name,
            algorithm=algorithm,
            bits=self.settings.dkim_rsa_bits,
            selector=selector,  # type: ignore[arg-type]
        )

        def work(conn: Connection) -> DkimKeyRow:
            added = store.add_key(conn, row.id, key.selector, key.algorithm, key.private_key, "pending", now)
            details = {"selector": key.selector, "algorithm": key.algorithm}
            audit.record(
                conn, actor, action, at=now, account_id=row.account_id, target=row.name, details=details
            )
            return added

        added = await self.db.run(work)
        record = _record(row.name, added)
        server = self.settings.domains.dns_update
        if server:
            try:
                await publish([record], server, self._lookups())
            except PublishError as exc:
                log.warning("DKIM key %s not published: %s", record.name, exc)
        return row, added, record

    async def keys(self, name: str, *, account_id: int | None = None) -> tuple[DomainRow, list[KeyStatus]]:
        """Every key of the domain with its record and what the operator should do about it."""
        row = await self._domain(name, account_id)
        counts = await self.db.run(_unfinished_counts, [k.id for k in row.keys if k.state == "retiring"])
        return row, [KeyStatus(k, _record(row.name, k), counts.get(k.id, 0)) for k in row.keys]

    async def check(self) -> dict[str, int]:
        """One round (a scheduled job): activate pending keys found in DNS, retire drained retiring keys."""
        lookups = self._lookups()
        done = {"activated": 0, "retired": 0}
        for domain, key in await self.db.run(store.keys_in, ("pending", "retiring")):
            if key.state == "pending":
                if await _published(lookups, _record(domain, key)):
                    done["activated"] += await self.db.run(self._activate, domain, key, self.clock.now())
            elif key.retiring_at is not None and self.clock.now() >= key.retiring_at + 2 * SIGNER_REFRESH:
                retired = await self.db.run(self._retire, domain, key, self.clock.now())
                if retired and self.settings.domains.dns_update:
                    await self._withdraw(_record(domain, key).name, lookups)
                done["retired"] += retired
        return done

    def _activate(self, conn: Connection, domain: str, key: DkimKeyRow, now: datetime) -> int:
        if not store.set_state(conn, key.id, "active", now, expected="pending"):
            return 0
        replaced = [
            k
            for k in store.keys_of(conn, [key.domain_id]).get(key.domain_id, [])
            if k.state == "active" and k.algorithm == key.algorithm and k.id != key.id
        ]
        for old in replaced:
            store.set_state(conn, old.id, "retiring", now, expected="active")
        data = {
            "domain": domain,
            "selector": key.selector,
            "algorithm": key.algorithm,
            "replaces": [old.selector for old in replaced],
        }
        record(conn, [NewEvent(self._account(conn, domain), KEY_ACTIVE, data)], now)
        log.info("DKIM key %s._domainkey.%s is in DNS and signs now", key.selector, domain)
        return 1

    def _retire(self, conn: Connection, domain: str, key: DkimKeyRow, now: datetime) -> int:
        if store.unfinished_signed_with(conn, key.id):
            return 0
        if not store.set_state(conn, key.id, "retired", now, expected="retiring"):
            return 0
        name = f"{key.selector}._domainkey.{domain}"
        data = {"domain": domain, "selector": key.selector, "algorithm": key.algorithm, "record": name}
        record(conn, [NewEvent(self._account(conn, domain), KEY_RETIRED, data)], now)
        log.info("DKIM key %s is retired: no unfinished mail carries its signature; remove its record", name)
        return 1

    def _lookups(self) -> Lookups:
        return Lookups(make_resolver(self.settings.dns_servers), _LOOKUP_TIMEOUT)

    async def _withdraw(self, name: str, lookups: Lookups) -> None:
        """Remove a retired key's record where the platform may edit DNS (`domains.dns_update`)."""
        server = self.settings.domains.dns_update
        assert server is not None
        try:
            await withdraw([name], "TXT", server, lookups)
        except PublishError as exc:
            log.warning("DKIM record %s not removed: %s", name, exc)

    @staticmethod
    def _account(conn: Connection, domain: str) -> int:
        found = account_store.find_domain(conn, domain)
        assert found is not None  # domains are never removed while they have keys
        return found.account_id


def _unfinished_counts(conn: Connection, key_ids: list[int]) -> dict[int, int]:
    return {key_id: store.unfinished_signed_with(conn, key_id) for key_id in key_ids}


async def _published(lookups: Lookups, wanted: DnsRecord) -> bool:
    """Whether DNS answers the record's exact value (whitespace and case aside)."""
    compact = "".join(wanted.value.split()).lower()
    found = await lookups.records(wanted.name, "TXT") or []
    return any("".join(value.split()).lower() == compact for value in found)
