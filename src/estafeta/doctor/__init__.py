"""`estafeta doctor`: checks of a whole deployment, each with what to fix.

`run(settings)` returns one `Check` per row, in the order an operator fixes things: the database, the
clock, the listening ports, the TLS certificate, the sending addresses' reverse DNS and HELO, the
return path's SPF for each of them, the inbound listener as reached through the return-path MX, and each
sending domain's records. It reads and connects, and changes nothing (the database is not migrated).
The command line renders the rows; another edge (the operator's dashboard page) may render them too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import dns.asyncresolver

from estafeta.config import Settings
from estafeta.delivery.mx import make_resolver
from estafeta.doctor.check import Check, Status
from estafeta.doctor.database import check_database
from estafeta.doctor.dns import check_domains, check_return_path_spf, check_sources
from estafeta.doctor.network import check_inbound_mx, check_ntp, check_ports
from estafeta.doctor.tls import check_certificate
from estafeta.store.db import Database

__all__ = ["Check", "Status", "failed", "run"]


def _resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    """The platform's resolvers, uncached: a record just published shows at once."""
    resolver = make_resolver(settings.dns_servers)
    resolver.cache = None
    resolver.lifetime = settings.doctor.timeout
    return resolver


async def _dns(settings: Settings, resolver: dns.asyncresolver.Resolver) -> list[Check]:
    rows, sources = await check_sources(settings, resolver)
    return rows + await check_return_path_spf(settings, resolver, sources)


async def _domains(
    settings: Settings, db: Database | None, resolver: dns.asyncresolver.Resolver
) -> list[Check]:
    if db is None:
        return [
            Check(
                "sending domains",
                "database",
                "warn",
                "not checked: the database is not usable (above)",
                "fix the database first",
            )
        ]
    return await check_domains(settings, db, resolver)


async def run(settings: Settings, resolver: dns.asyncresolver.Resolver | None = None) -> list[Check]:
    """Every check of the deployment that `settings` describe (DNS through `resolver`, or the settings'
    resolvers uncached)."""
    resolver = resolver or _resolver(settings)
    database_rows, db = await asyncio.to_thread(check_database, settings)
    try:
        groups = await asyncio.gather(
            check_ntp(settings),
            check_ports(settings),
            asyncio.to_thread(check_certificate, settings, datetime.now(UTC)),
            _dns(settings, resolver),
            check_inbound_mx(settings, resolver),
            _domains(settings, db, resolver),
        )
    finally:
        if db is not None:
            db.close()
    return database_rows + [row for group in groups for row in group]


def failed(checks: list[Check]) -> bool:
    return any(check.status == "fail" for check in checks)
