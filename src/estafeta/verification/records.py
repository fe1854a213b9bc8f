"""What DNS says about a sending domain, record by record: ok, missing, wrong (or unknown when DNS failed),
with the exact record to publish and what was found instead.

DKIM keys are compared with the domain's own (per selector); SPF is evaluated by pyspf for each sending
address, within RFC 7208's 10-lookup limit; DMARC is parsed by checkdmarc (the organizational domain's
record applies when the domain has none) and its adkim/aspf decide whether the DKIM `d=` or the return
path is aligned with the From domain. A domain is verified when every required check is ok: DKIM, DMARC
and alignment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.resolver
from checkdmarc.dmarc import DMARCError, parse_dmarc_record
from checkdmarc.utils import get_base_domain
from dkim.util import InvalidTagValueList, parse_tag_value

from estafeta.config import Settings
from estafeta.dkim import DkimKey
from estafeta.domains import DomainRow, dmarc_record, keys_to_publish, sending_addresses, spf_record
from estafeta.spf_eval import SpfResult, evaluate

Status = Literal["ok", "missing", "wrong", "unknown"]
_TIMEOUT = 5.0


@dataclass(frozen=True)
class RecordCheck:
    """One check: `expected` is the record to publish (name, type, value), `found` what DNS answered."""

    check: str
    name: str
    type: str
    status: Status
    expected: str
    found: list[str]
    detail: str
    required: bool


@dataclass(frozen=True)
class DomainReport:
    domain: str
    checks: list[RecordCheck]

    @property
    def verified(self) -> bool:
        return all(check.status == "ok" for check in self.checks if check.required)

    def problems(self) -> list[str]:
        """What keeps the domain from being verified, one sentence per failed required check."""
        return [f"{c.check}: {c.detail}" for c in self.checks if c.required and c.status != "ok"]

    def as_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "verified": self.verified, "checks": [asdict(c) for c in self.checks]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainReport:
        return cls(str(data["domain"]), [RecordCheck(**c) for c in data["checks"]])


class Lookups:
    """Uncached lookups through the platform's name servers (a record just published shows at once): async
    for our own queries, blocking for pyspf and checkdmarc (run in threads)."""

    def __init__(self, platform: dns.asyncresolver.Resolver, timeout: float = _TIMEOUT) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.blocking = dns.resolver.Resolver(configure=False)
        for resolver in (self.resolver, self.blocking):
            resolver.nameservers = list(platform.nameservers)
            resolver.cache = None
            resolver.lifetime = timeout

    async def records(self, name: str, rdtype: str) -> list[str] | None:
        """Each record's text (TXT strings joined), [] when there is none, None when DNS failed."""
        try:
            answer = await self.resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException:
            return None
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]  # type: ignore[attr-defined]
        return [r.to_text() for r in answer]


def _tags(record: str) -> dict[bytes, bytes]:
    try:
        return parse_tag_value(record.encode())
    except InvalidTagValueList:
        return {}


def _public_key(tags: dict[bytes, bytes]) -> bytes:
    return b"".join(tags.get(b"p", b"").split())


async def check_dkim(key: DkimKey, state: str, lookups: Lookups) -> RecordCheck:
    """A key that signs (`active`) is required; a rotation's `pending` and `retiring` keys are advice."""
    found = await lookups.records(key.record_name, "TXT")
    expected = key.record_value
    wanted = _tags(expected)
    label = f"DKIM {key.selector}" + ("" if state == "active" else f" ({state})")

    def result(status: Status, detail: str) -> RecordCheck:
        required = state == "active"
        return RecordCheck(label, key.record_name, "TXT", status, expected, found or [], detail, required)

    if found is None:
        return result("unknown", f"DNS did not answer for {key.record_name}")
    keys = [_tags(value) for value in found if b"p" in _tags(value)]
    if not keys:
        return result("missing", f"publish the key as TXT at {key.record_name}")
    if any(
        _public_key(t) == _public_key(wanted) and t.get(b"k", b"rsa") == wanted.get(b"k", b"rsa")
        for t in keys
    ):
        return result("ok", "the published key is this domain's signing key")
    if any(not _public_key(t) for t in keys):
        return result("wrong", "the key is revoked (empty p=); publish the expected record")
    return result("wrong", "another key is published; replace it with the expected record")


async def sending_ips(settings: Settings, lookups: Lookups) -> list[str]:
    """Addresses mail leaves from: every pool's, or else the host name's A/AAAA records."""
    configured = sending_addresses(settings)
    if configured:
        return configured
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        found += await lookups.records(settings.hostname, rdtype) or []
    return found


def _spf_status(result: SpfResult) -> tuple[Status, str]:
    if result.result == "pass":
        return "ok", f"pass ({result.lookups} of 10 DNS lookups)"
    if result.result == "none":
        return "missing", "no SPF record"
    if result.result == "temperror":
        return "unknown", result.explanation
    if result.result == "permerror":
        return "wrong", f"permerror: {result.explanation}"
    return "wrong", f"{result.result}: this address is not authorized"


def _spf_expected(found: list[str], settings: Settings) -> str:
    """The record to publish: ours, or the one published with the platform's terms added before `all`."""
    ours = spf_record(settings)
    if len(found) != 1:
        return ours
    terms, mine = found[0].split(), ours.split()[1:-1]
    if all(term in terms for term in mine):
        return found[0]
    at = next((i for i, t in enumerate(terms) if t.lstrip("+-~?").lower() == "all"), len(terms))
    return " ".join(terms[:at] + mine + terms[at:])


async def check_spf(
    domain: str, ips: Sequence[str], settings: Settings, lookups: Lookups, *, label: str = "SPF"
) -> tuple[list[RecordCheck], dict[str, str]]:
    """One check per sending address, and the SPF result of each (for alignment)."""
    found = [v for v in await lookups.records(domain, "TXT") or [] if v.lower().startswith("v=spf1")]
    expected = _spf_expected(found, settings)
    if not ips:
        detail = f"no sending address: ip_pools is empty and {settings.hostname} has no A/AAAA record"
        return [RecordCheck(label, domain, "TXT", "unknown", expected, found, detail, False)], {}
    results = await asyncio.gather(
        *(
            asyncio.to_thread(evaluate, lookups.blocking, ip, f"postmaster@{domain}", settings.hostname)
            for ip in ips
        )
    )
    checks = []
    for ip, result in zip(ips, results, strict=True):
        status, detail = _spf_status(result)
        checks.append(RecordCheck(f"{label} {ip}", domain, "TXT", status, expected, found, detail, False))
    return checks, {ip: r.result for ip, r in zip(ips, results, strict=True)}


@dataclass(frozen=True)
class Dmarc:
    check: RecordCheck
    tags: dict[str, Any]  # checkdmarc's parsed tags; empty when there is no valid record


async def _dmarc_text(domain: str, lookups: Lookups) -> tuple[str, list[str] | None]:
    """Where the policy for `domain` is found (its own name, else its organizational domain's)."""
    name = f"_dmarc.{domain}"
    found = await lookups.records(name, "TXT")
    base = get_base_domain(domain)
    if found is not None and not [v for v in found if v.lower().startswith("v=dmarc1")] and base != domain:
        fallback = await lookups.records(f"_dmarc.{base}", "TXT")
        if fallback:
            return f"_dmarc.{base}", fallback
    return name, found


async def check_dmarc(domain: str, settings: Settings, lookups: Lookups) -> Dmarc:
    expected = dmarc_record(settings)
    name, found = await _dmarc_text(domain, lookups)
    records = [v for v in found or [] if v.lower().startswith("v=dmarc1")]

    def result(status: Status, detail: str, tags: dict[str, Any] | None = None) -> Dmarc:
        check = RecordCheck("DMARC", name, "TXT", status, expected, found or [], detail, True)
        return Dmarc(check, tags or {})

    if found is None:
        return result("unknown", f"DNS did not answer for {name}")
    if not records:
        return result("missing", f"publish a DMARC policy as TXT at _dmarc.{domain}")
    if len(records) > 1:
        return result("wrong", "several DMARC records are published; receivers then ignore them all")
    try:
        parsed = await asyncio.to_thread(
            parse_dmarc_record,
            records[0],
            name.removeprefix("_dmarc."),
            resolver=lookups.blocking,
            timeout=_TIMEOUT,
            retries=0,
        )
    except DMARCError as exc:
        return result("wrong", str(exc))
    tags = parsed["tags"]
    rua = [uri["address"] for uri in tags.get("rua", {}).get("value", [])]
    detail = f"p={tags['p']['value']}, rua={', '.join(rua) or 'none'}"
    if settings.dmarc_rua not in rua:
        detail += f"; the platform's reports need rua=mailto:{settings.dmarc_rua}"
    return result("ok", detail, tags)


def aligned(a: str, b: str, mode: str) -> bool:
    """RFC 7489 3.1: strict alignment is the same name, relaxed the same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else get_base_domain(a) == get_base_domain(b)


def check_alignment(
    domain: str, dkim: list[RecordCheck], dmarc: Dmarc, return_path_spf: dict[str, str], settings: Settings
) -> RecordCheck:
    """DMARC passes when an aligned DKIM signature (d= is the From domain here) or an aligned SPF pass of
    the return path holds."""
    adkim = str(dmarc.tags.get("adkim", {}).get("value", "r"))
    aspf = str(dmarc.tags.get("aspf", {}).get("value", "r"))
    return_path = settings.return_path_domain
    dkim_ok = any(c.required for c in dkim) and all(c.status == "ok" for c in dkim if c.required)
    dkim_aligned = aligned(domain, domain, adkim)  # the platform signs with d= the From domain
    spf_passes = bool(return_path_spf) and all(r == "pass" for r in return_path_spf.values())
    spf_aligned = aligned(return_path, domain, aspf)
    found = [
        f"DKIM d={domain}: {'aligned' if dkim_aligned else 'not aligned'} (adkim={adkim}), "
        f"{'key published' if dkim_ok else 'key not verified'}",
        f"return path {return_path}: {'aligned' if spf_aligned else 'not aligned'} (aspf={aspf}), "
        f"SPF {'pass' if spf_passes else 'not pass'}",
    ]
    expected = f"DKIM d={domain} aligned with From: {domain}"
    if not dmarc.tags:
        status: Status = "unknown" if dmarc.check.status == "unknown" else "wrong"
        detail = "needs a valid DMARC record to tell"
    elif (dkim_ok and dkim_aligned) or (spf_passes and spf_aligned):
        status, detail = "ok", "DMARC passes through " + ("DKIM" if dkim_ok and dkim_aligned else "SPF")
    else:
        status, detail = "wrong", "neither an aligned DKIM signature nor an aligned SPF pass: DMARC fails"
    return RecordCheck("alignment", f"_dmarc.{domain}", "TXT", status, expected, found, detail, True)


async def check_return_path(settings: Settings, lookups: Lookups) -> RecordCheck:
    name = settings.return_path_domain
    expected = f"10 {settings.hostname}."
    found = await lookups.records(name, "MX")
    hosts = {value.split()[-1].rstrip(".").lower() for value in found or []}

    def result(status: Status, detail: str) -> RecordCheck:
        return RecordCheck("return path MX", name, "MX", status, expected, found or [], detail, False)

    if found is None:
        return result("unknown", f"DNS did not answer for {name}")
    if not found:
        return result("missing", f"bounces and complaints cannot reach the platform: {name} has no MX")
    if settings.hostname.lower() not in hosts:
        return result("wrong", f"{name} does not point at {settings.hostname}")
    return result("ok", f"bounces reach {settings.hostname}")


async def check_tracking(settings: Settings, lookups: Lookups) -> RecordCheck | None:
    """The tracking host of `tracking.base_url` must resolve (a CNAME to the platform, or its address)."""
    host = urlsplit(settings.tracking.base_url).hostname if settings.tracking.base_url else None
    if not host:
        return None
    expected = f"CNAME {settings.hostname}."
    cname = await lookups.records(host, "CNAME")
    addresses = (await lookups.records(host, "A") or []) + (await lookups.records(host, "AAAA") or [])
    found = (cname or []) + addresses
    if cname is None:
        status: Status = "unknown"
        detail = f"DNS did not answer for {host}"
    elif not addresses:
        status, detail = "missing", f"tracking links to {host} cannot be opened: it does not resolve"
    else:
        status, detail = "ok", f"{host} resolves"
    return RecordCheck("tracking", host, "CNAME", status, expected, found, detail, False)


async def check_domain(row: DomainRow, settings: Settings, lookups: Lookups) -> DomainReport:
    """Every record of the domain, looked up now; the lookups run together, so a DNS server that does not
    answer costs one time-out, not one per record."""
    keys = keys_to_publish(row)
    ips = await sending_ips(settings, lookups)
    (
        dkim,
        (spf, _),
        (return_path_spf_checks, return_path_spf),
        dmarc,
        tracking,
        return_path,
    ) = await asyncio.gather(
        asyncio.gather(*(check_dkim(key, state, lookups) for key, state in keys)),
        check_spf(row.name, ips, settings, lookups),
        check_spf(settings.return_path_domain, ips, settings, lookups, label="SPF return path"),
        check_dmarc(row.name, settings, lookups),
        check_tracking(settings, lookups),
        check_return_path(settings, lookups),
    )
    alignment = check_alignment(row.name, list(dkim), dmarc, return_path_spf, settings)
    checks = [*dkim, dmarc.check, alignment, *spf, *return_path_spf_checks, return_path]
    return DomainReport(row.name, checks + ([tracking] if tracking else []))
