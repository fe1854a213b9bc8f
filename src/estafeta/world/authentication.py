"""How receivers authenticate mail: DKIM with two independent verifiers, SPF with pyspf, DMARC alignment.

dkimpy is the verifier every provider uses. Providers that enforce DMARC (`Provider.enforces_dmarc`) also
ask Debian's Mail::DKIM (`libmail-dkim-perl`, a Perl implementation that shares no code with dkimpy) through
one long-running `perl` process that reads keys from the world's DNS server, so a signature the platform
makes must convince two implementations, not only the library it signs with. Mail::DKIM 1.20230212 (Debian
12) verifies rsa-sha256 and reports ed25519-sha256 signatures as "invalid (unsupported algorithm)".

SPF is evaluated by pyspf (`estafeta.spf_eval`) for the client address and envelope sender; its DNS
questions are answered from the zone directly, since these checks run in the event loop that also serves
the world's DNS socket.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import dkim
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import idna
from dkim.util import InvalidTagValueList, parse_tag_value

from estafeta import spf_eval
from estafeta.world.zone import WorldZone

log = logging.getLogger(__name__)

MAIL_DKIM_SCRIPT = Path(__file__).with_name("mail_dkim_verify.pl")
_VERIFY_TIMEOUT = 30.0


@dataclass(frozen=True)
class SignatureVerdict:
    """What one verifier said about one DKIM-Signature header."""

    verifier: str  # "dkimpy" | "mail-dkim"
    domain: str
    selector: str
    algorithm: str
    result: str  # pass | fail | invalid | temperror | unavailable …
    detail: str = ""


@dataclass(frozen=True)
class Authentication:
    """A receiver's verdicts on one message: DKIM per signature and verifier, SPF, DMARC."""

    signatures: tuple[SignatureVerdict, ...]
    dkim: str  # pass: a dkimpy-verified signature aligned with From; fail: signed, none aligned; none
    spf: str  # pyspf's result for the client address and the envelope sender
    dmarc: str  # pass | fail | none (no policy)
    policy: str  # the DMARC policy that applies: none | quarantine | reject ("" without a record)
    from_domain: str

    def verdicts(self, verifier: str) -> list[SignatureVerdict]:
        return [s for s in self.signatures if s.verifier == verifier]

    def passed(self, verifier: str) -> bool:
        """Whether `verifier` verified every signature it could (at least one)."""
        own = self.verdicts(verifier)
        return bool(own) and all(s.result == "pass" for s in own)

    def refusal(self) -> str | None:
        """The reply of a receiver that enforces DMARC `p=reject`, or None to accept."""
        if self.policy != "reject" or self.dmarc != "fail":
            return None
        return (
            f"550 5.7.1 Unauthenticated mail from {self.from_domain} is refused by its DMARC policy "
            f"(p=reject): no valid DKIM signature aligned with {self.from_domain} (DKIM {self.dkim}), "
            f"and SPF {self.spf} or not aligned"
        )


def ascii_domain(domain: str) -> str:
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain.lower()


def organizational(domain: str) -> str:
    """The world's domains are all registered directly under `.test`: the last two labels."""
    return ".".join(domain.split(".")[-2:])


def aligned(domain: str, from_domain: str, mode: str = "r") -> bool:
    """DMARC identifier alignment (RFC 7489 §3.1): strict is equality, relaxed shares the organization."""
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return organizational(domain) == organizational(from_domain)


def header_from_domain(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The domain of the single From address, as an A-label; None when From is missing or not one address."""
    for name, value in headers:
        if name.lower() == b"from":
            addresses = getaddresses([value.decode("utf-8", errors="replace")])
            if len(addresses) == 1 and "@" in addresses[0][1]:
                return ascii_domain(addresses[0][1].rpartition("@")[2])
            return None
    return None


def dmarc_record(zone: WorldZone, domain: str) -> tuple[str, dict[str, str]] | None:
    """(policy domain, tags) of the DMARC record that covers `domain`: its own, else its organization's."""
    for name in dict.fromkeys([domain, organizational(domain)]):
        for record in zone.txt(f"_dmarc.{name}"):
            if record.startswith("v=DMARC1"):
                tags = dict(
                    (part.split("=", 1)[0].strip(), part.split("=", 1)[1].strip())
                    for part in record.split(";")
                    if "=" in part
                )
                return name, tags
    return None


def dkimpy_verdicts(message: bytes, zone: WorldZone) -> tuple[list[SignatureVerdict], str | None]:
    """dkimpy's verdict on every signature, and the From domain (keys read from the zone directly)."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        records = zone.txt(name.decode("ascii", errors="replace"))
        return records[0].encode() if records else None

    try:
        verifier = dkim.DKIM(message)
    except dkim.DKIMException as error:
        return [SignatureVerdict("dkimpy", "", "", "", "fail", str(error))], None
    from_domain = header_from_domain(verifier.headers)
    verdicts = []
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    for index, value in enumerate(signatures):
        tags = _tags(value)
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            detail = "" if ok else "signature did not verify"
        except dkim.DKIMException as error:
            ok, detail = False, str(error)
        verdicts.append(
            SignatureVerdict(
                "dkimpy",
                tags.get("d", "").lower(),
                tags.get("s", ""),
                tags.get("a", ""),
                "pass" if ok else "fail",
                detail,
            )
        )
    return verdicts, from_domain


def _tags(value: bytes) -> dict[str, str]:
    try:
        parsed = parse_tag_value(b"".join(value.split()))
    except InvalidTagValueList:
        return {}
    return {key.decode(errors="replace"): val.decode(errors="replace") for key, val in parsed.items()}


def dkim_result(verdicts: list[SignatureVerdict], from_domain: str | None) -> str:
    """pass when a signature verified and its d= is the From domain or a parent of it; fail when signed."""
    if not verdicts:
        return "none"
    if from_domain is None:
        return "fail"
    for verdict in verdicts:
        signer = verdict.domain.rstrip(".")
        if verdict.result == "pass" and (from_domain == signer or from_domain.endswith("." + signer)):
            return "pass"
    return "fail"


class ZoneResolver(dns.resolver.Resolver):
    """A resolver that answers from the world's zone itself: SPF is evaluated in the event loop that also
    serves the world's DNS socket, where a query over the socket would wait on itself."""

    def __init__(self, zone: WorldZone) -> None:
        super().__init__(configure=False)
        self._zone = zone

    def resolve(self, qname: Any, rdtype: Any = "A", *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        name = dns.name.from_text(str(qname))
        found = self._zone.lookup(name, dns.rdatatype.RdataType.make(rdtype))
        if found.rcode == dns.rcode.NXDOMAIN:
            raise dns.resolver.NXDOMAIN(qnames=[name])
        if found.rdataset is None:
            raise dns.resolver.NoAnswer
        return list(found.rdataset)


def spf_result(zone: WorldZone, mail_from: str, peer: str, helo: str = "") -> str:
    """pyspf's SPF result (RFC 7208, `estafeta.spf_eval`) for the client address and the envelope sender's
    domain (the HELO name for `<>`). Results are cached until the zone changes: every VERP return path of a
    platform shares one domain, and the world's records use no local-part macros."""
    domain = mail_from.rpartition("@")[2] if "@" in mail_from else helo
    if not domain:
        return "none"
    return _spf(zone, zone.version, domain.lower(), peer, helo)


@functools.lru_cache(maxsize=4096)
def _spf(zone: WorldZone, version: int, domain: str, peer: str, helo: str) -> str:
    return spf_eval.evaluate(ZoneResolver(zone), peer, f"postmaster@{domain}", helo or "unknown").result


def evaluate(
    zone: WorldZone,
    message: bytes,
    peer: str,
    mail_from: str,
    helo: str,
    second_opinion: list[SignatureVerdict],
) -> Authentication:
    """The full verdict of a receiver that enforces DMARC, given Mail::DKIM's verdicts on the message."""
    verdicts, from_domain = dkimpy_verdicts(message, zone)
    dkim_verdict = dkim_result(verdicts, from_domain)
    spf_verdict = spf_result(zone, mail_from, peer, helo)
    signatures = tuple(verdicts + second_opinion)
    if from_domain is None:  # no single From address: nothing to align with
        return Authentication(signatures, dkim_verdict, spf_verdict, "fail", "reject", "")
    found = dmarc_record(zone, from_domain)
    if found is None:
        return Authentication(signatures, dkim_verdict, spf_verdict, "none", "", from_domain)
    policy_domain, tags = found
    policy = tags.get("p", "none") if policy_domain == from_domain else tags.get("sp", tags.get("p", "none"))
    dkim_aligned = any(
        v.result == "pass" and aligned(v.domain, from_domain, tags.get("adkim", "r")) for v in verdicts
    )
    envelope = (mail_from.rpartition("@")[2] or helo).lower()
    spf_aligned = spf_verdict == "pass" and aligned(envelope, from_domain, tags.get("aspf", "r"))
    return Authentication(
        signatures,
        dkim_verdict,
        spf_verdict,
        "pass" if dkim_aligned or spf_aligned else "fail",
        policy.lower(),
        from_domain,
    )


class MailDkim:
    """Debian's Mail::DKIM verifier in one `perl` process, asked one message at a time.

    Started in the world's event loop (`start`); each `verify` awaits the answer while the loop goes on
    serving the DNS queries the verifier makes.
    """

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.unavailable = ""  # why the verifier cannot run, when it cannot

    async def start(self, dns_address: tuple[str, int]) -> None:
        """Start the verifier, which asks the DNS server at `dns_address` for keys."""
        perl = shutil.which("perl")
        if perl is None:
            self.unavailable = "perl is not installed"
        else:
            probe = await asyncio.create_subprocess_exec(
                perl, "-MMail::DKIM::Verifier", "-e1", stderr=asyncio.subprocess.DEVNULL
            )
            if await probe.wait() != 0:
                self.unavailable = "Mail::DKIM is not installed (Debian: libmail-dkim-perl)"
        if self.unavailable:
            log.warning("the second DKIM verifier is unavailable: %s", self.unavailable)
            return
        host, port = dns_address
        self._process = await asyncio.create_subprocess_exec(
            perl,  # type: ignore[arg-type]
            str(MAIL_DKIM_SCRIPT),
            host,
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    async def verify(self, message: bytes) -> list[SignatureVerdict]:
        """Mail::DKIM's verdict on every DKIM-Signature of `message`."""
        if self._process is None:
            return [SignatureVerdict("mail-dkim", "", "", "", "unavailable", self.unavailable)]
        assert self._process.stdin is not None and self._process.stdout is not None
        async with self._lock:
            self._process.stdin.write(b"%d\n" % len(message) + message)
            await self._process.stdin.drain()
            line = await asyncio.wait_for(self._process.stdout.readline(), _VERIFY_TIMEOUT)
        answer = json.loads(line)
        return [
            SignatureVerdict(
                "mail-dkim", s["domain"].lower(), s["selector"], s["algorithm"], s["result"], s["detail"]
            )
            for s in answer["signatures"]
        ]

    async def stop(self) -> None:
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        self._process = None
