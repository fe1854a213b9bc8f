"""Reverse DNS and HELO: every sending address has a PTR name that resolves back to it, and greets with it.

Receivers (Gmail, Yahoo, Microsoft) refuse or junk mail from an IP address without forward-confirmed
reverse DNS (FCrDNS): its PTR record must name a host whose A/AAAA records include the address, and the
EHLO name should be that host. Each address of `ip_pools` is checked when delivery starts (and, while
failing, again every few minutes); connections from it greet with its PTR name. With
`delivery.reverse_dns = "require"` (the default) an address that fails is not used: mail for its pool
waits, deferred, until it passes; `"warn"` sends anyway and logs a warning. `estafeta doctor` shows the
same check (`check_pools`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from estafeta.config import Settings

log = logging.getLogger("estafeta.delivery")

RECHECK_SECONDS = 300.0  # how often an address that failed is checked again


@dataclass(frozen=True)
class Result:
    """The reverse-DNS check of one sending address."""

    pool: str
    address: str
    ok: bool
    helo: str  # the verified PTR name: the EHLO name to use ("" when there is none)
    ptr: tuple[str, ...]  # names the PTR lookup returned
    problem: str = ""
    fix: str = ""


async def _names(resolver: dns.asyncresolver.Resolver, address: str) -> tuple[str, ...]:
    try:
        answer = await resolver.resolve(dns.reversename.from_address(address), "PTR")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return ()
    return tuple(r.target.to_text(omit_final_dot=True).lower() for r in answer)


async def _forward(resolver: dns.asyncresolver.Resolver, name: str, version: int) -> set[str]:
    try:
        answer = await resolver.resolve(name, "A" if version == 4 else "AAAA")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return set()
    return {str(ipaddress.ip_address(r.to_text())) for r in answer}


async def check_address(resolver: dns.asyncresolver.Resolver, address: str, pool: str = "") -> Result:
    """FCrDNS of one address: some PTR name of it must resolve back to it."""
    ip = ipaddress.ip_address(address)
    address = str(ip)
    reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    record = "A" if ip.version == 4 else "AAAA"
    try:
        names = await _names(resolver, address)
        if not names:
            return Result(
                pool,
                address,
                False,
                "",
                (),
                f"{address} has no PTR record",
                f"have the owner of {address} publish `{reverse} PTR <host name>`, and publish "
                f"`<host name> {record} {address}`",
            )
        found: dict[str, set[str]] = {}
        for name in names:
            found[name] = await _forward(resolver, name, ip.version)
            if address in found[name]:
                return Result(pool, address, True, name, names)
    except dns.exception.DNSException as exc:
        return Result(
            pool, address, False, "", (), f"reverse DNS of {address} could not be checked: {exc}", "try again"
        )
    seen = "; ".join(f"{name} → {', '.join(sorted(a)) or 'no address'}" for name, a in found.items())
    return Result(
        pool,
        address,
        False,
        "",
        names,
        f"the PTR name of {address} does not resolve back to it ({seen})",
        f"publish `{names[0]} {record} {address}`",
    )


async def check_pools(settings: Settings, resolver: dns.asyncresolver.Resolver) -> list[Result]:
    """The check of every address of every IP pool, in settings order."""
    pairs = [(pool, str(address)) for pool, addresses in settings.ip_pools.items() for address in addresses]
    return list(await asyncio.gather(*(check_address(resolver, address, pool) for pool, address in pairs)))


class SourceNames:
    """Which pool addresses may send, and the EHLO name of each (their checks, kept fresh)."""

    def __init__(self, settings: Settings, resolver: dns.asyncresolver.Resolver) -> None:
        self.settings = settings
        self.resolver = resolver
        self._results: dict[str, Result] = {}
        self._checked_at: float | None = None

    async def refresh(self) -> None:
        """Check every address at first, then those still failing every RECHECK_SECONDS."""
        if not self.settings.ip_pools:
            return
        now = time.monotonic()
        if self._checked_at is not None and now - self._checked_at < RECHECK_SECONDS:
            return
        self._checked_at = now
        pending = [
            (pool, str(address))
            for pool, addresses in self.settings.ip_pools.items()
            for address in addresses
            if str(address) not in self._results or not self._results[str(address)].ok
        ]
        checks = await asyncio.gather(*(check_address(self.resolver, a, pool) for pool, a in pending))
        for result in checks:
            before = self._results.get(result.address)
            self._results[result.address] = result
            if result.ok:
                log.info(
                    "sending address %s (pool %s) greets as %s", result.address, result.pool, result.helo
                )
            elif before is None:
                self._log_failure(result)

    def _log_failure(self, result: Result) -> None:
        if self.settings.delivery.reverse_dns == "require":
            log.error(
                'sending address %s of pool %s is not used: %s. Fix: %s. (delivery.reverse_dns = "warn" '
                "sends from it anyway)",
                result.address,
                result.pool,
                result.problem,
                result.fix,
            )
        else:
            log.warning(
                "sending address %s of pool %s: %s. Fix: %s",
                result.address,
                result.pool,
                result.problem,
                result.fix,
            )

    def usable(self, address: str) -> bool:
        result = self._results.get(address)
        return result is None or result.ok or self.settings.delivery.reverse_dns == "warn"

    def helo(self, address: str | None) -> str:
        """The EHLO name for connections from `address` (None: the system's, greeting as `hostname`)."""
        result = self._results.get(address) if address is not None else None
        return result.helo if result is not None and result.helo else self.settings.hostname
