"""DNS as receivers read it: reverse DNS and the EHLO name of every sending address, the return-path
domain's SPF for each of them, and each sending domain's records.

The sending addresses are those of `ip_pools`; without pools, mail leaves from the machine's own address,
taken to be the address of `hostname` (its EHLO name then).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from estafeta.clock import SystemClock
from estafeta.config import Settings
from estafeta.delivery.helo import Result, check_address, check_pools
from estafeta.delivery.mx import MxResolver
from estafeta.doctor.check import Check
from estafeta.domains import Domains
from estafeta.spf_eval import evaluate, sync_resolver
from estafeta.store.db import Database
from estafeta.verification.records import Lookups, RecordCheck, check_domain

CHECK = "reverse DNS and HELO"


@dataclass(frozen=True)
class Source:
    address: str
    helo: str  # the name it greets with
    label: str  # how the report names it


def _row(result: Result, label: str) -> Check:
    if result.ok:
        return Check(CHECK, label, "pass", f"PTR {result.helo} resolves back; greets as {result.helo}")
    return Check(CHECK, label, "fail", result.problem, result.fix)


async def _own_addresses(settings: Settings, resolver: dns.asyncresolver.Resolver) -> list[str]:
    return await MxResolver(resolver).addresses(settings.hostname)


async def check_sources(
    settings: Settings, resolver: dns.asyncresolver.Resolver
) -> tuple[list[Check], list[Source]]:
    """One row per sending address (FCrDNS, and the EHLO name it uses), and those addresses."""
    hostname = settings.hostname
    if settings.ip_pools:
        results = await check_pools(settings, resolver)
        rows = [_row(r, f"{r.address} (pool {r.pool})") for r in results]
        sources = [Source(r.address, r.helo or hostname, f"{r.address} (pool {r.pool})") for r in results]
        return rows, sources
    try:
        addresses = await _own_addresses(settings, resolver)
    except dns.exception.DNSException as exc:
        return [Check(CHECK, hostname, "fail", f"address lookup failed: {exc}", "check dns_servers")], []
    if not addresses:
        return [
            Check(
                CHECK,
                hostname,
                "fail",
                f"hostname {hostname} (the EHLO name) has no address record",
                f"publish `{hostname} A <this machine's outbound address>` and its PTR record, or list the "
                "sending addresses in ip_pools",
            )
        ], []
    rows, sources = [], []
    for address in addresses:
        result = await check_address(resolver, address)
        label = f"{address} ({hostname})"
        sources.append(Source(address, hostname, label))
        if result.ok and result.helo != hostname.lower():
            reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
            rows.append(
                Check(
                    CHECK,
                    label,
                    "fail",
                    f"the PTR name of {address} is {result.helo}, but the platform greets as {hostname}",
                    f'set hostname = "{result.helo}", or have the owner of {address} publish '
                    f"`{reverse} PTR {hostname}`",
                )
            )
        else:
            rows.append(_row(result, label))
    return rows, sources


def _spf_records(resolver: dns.resolver.Resolver, domain: str) -> list[str]:
    try:
        answer = resolver.resolve(domain, "TXT")
    except dns.exception.DNSException:
        return []
    texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]  # type: ignore[attr-defined]
    return [t for t in texts if t.lower().startswith("v=spf1")]


def _spf_row(resolver: dns.resolver.Resolver, domain: str, source: Source) -> Check:
    result = evaluate(resolver, source.address, f"bounces@{domain}", source.helo)
    check, target = "SPF of the return path", f"{domain} for {source.label}"
    if result.result == "pass":
        return Check(check, target, "pass", f"pass: {result.explanation}")
    detail = f"{result.result}: {result.explanation}"
    mechanism = f"ip{ipaddress.ip_address(source.address).version}:{source.address}"
    records = _spf_records(resolver, domain)
    if result.result == "permerror":
        fix = f"correct the SPF record of {domain} (at most 10 DNS lookups): {' / '.join(records)}"
    elif result.result == "temperror":
        fix = "check dns_servers and the name servers of the domain, then run the doctor again"
    elif records:
        fix = f"add {mechanism} to the SPF record of {domain}: `{records[0]}`"
    else:
        fix = f'publish `{domain} TXT "v=spf1 {mechanism} -all"`'
    return Check(check, target, "fail", detail, fix)


async def check_return_path_spf(
    settings: Settings, resolver: dns.asyncresolver.Resolver, sources: list[Source]
) -> list[Check]:
    """SPF is checked on the envelope sender, the VERP return path at `return_path_domain`: each sending
    address must pass it (pyspf, with the 10-lookup limit)."""
    blocking = sync_resolver(resolver.nameservers, settings.doctor.timeout)
    domain = settings.return_path_domain
    return list(await asyncio.gather(*(asyncio.to_thread(_spf_row, blocking, domain, s) for s in sources)))


def _domain_row(check: RecordCheck) -> Check | None:
    """A verification check as a doctor row (the return path's SPF and MX have rows of their own)."""
    name = check.check.split(" ")[0]
    if check.check.startswith(("SPF return path", "return path")):
        return None
    label = {"alignment": "DMARC alignment"}.get(name, name)
    target = f"{check.name} for {check.check.split(' ', 1)[1]}" if name == "SPF" else check.name
    if check.status == "ok":
        return Check(label, target, "pass", check.detail)
    fix = f'publish `{check.name} {check.type} "{check.expected}"`' if check.type == "TXT" else check.expected
    if check.status == "unknown":
        return Check(label, target, "fail", check.detail, "check dns_servers")
    serious = check.required or name == "SPF"
    return Check(label, target, "fail" if serious else "warn", check.detail, fix)


async def check_domains(
    settings: Settings, db: Database, resolver: dns.asyncresolver.Resolver
) -> list[Check]:
    """Each sending domain's records as the verification service reads them: DKIM per selector, DMARC and
    its alignment, SPF for each sending address (`estafeta domains verify` shows the same, per domain)."""
    lookups = Lookups(resolver, settings.doctor.timeout)
    rows: list[Check] = []
    for domain in await Domains(db, settings, SystemClock()).list():
        for check in (await check_domain(domain, settings, lookups)).checks:
            row = _domain_row(check)
            if row is not None:
                rows.append(row)
    return rows
