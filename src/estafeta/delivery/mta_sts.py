"""MTA-STS (RFC 8461): which destinations insist on verified TLS, and to which of their MX hosts.

A destination announces a policy with `_mta-sts.<domain> TXT "v=STSv1; id=…"` and serves it at
`https://mta-sts.<domain>/.well-known/mta-sts.txt`. A fetched policy is kept (in the database, so that a
restart or another delivery process applies it too) until its `max_age` runs out; while the TXT id stays
the same nothing is fetched again, and a new id means a new policy. The cache is what protects mail once a
policy was seen: an attacker who removes the TXT record or blocks the policy host does not lift it.

Record and policy are parsed with checkdmarc (RFC 8461 grammar); the policy is fetched with httpx, through
the public-address guard, verified against the system's trust anchors plus `mta_sts.ca_file`, without
following redirects, from a host resolved with the platform's own DNS settings.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx
from checkdmarc.mta_sts import (
    MTASTSError,
    mx_in_mta_sts_patterns,
    parse_mta_sts_policy,
    parse_mta_sts_record,
)

from estafeta import public_http
from estafeta.clock import Clock
from estafeta.config import MtaStsSettings
from estafeta.store import mta_sts as store
from estafeta.store.db import Database
from estafeta.tls import trust_context

log = logging.getLogger("estafeta.delivery")

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3 lets senders limit the size; policies are a few lines


@dataclass(frozen=True)
class Policy:
    domain: str
    id: str
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int
    text: str
    fetched_at: datetime
    expires_at: datetime

    def allows(self, mx_host: str) -> bool:
        """Whether `mx_host` is one of the MX hosts the policy names (RFC 8461 §4.1 wildcards)."""
        return mx_in_mta_sts_patterns(mx_host.rstrip("."), list(self.mx))

    @property
    def lines(self) -> list[str]:
        """The policy as served, one string a line (TLS-RPT's `policy-string`)."""
        return [line.rstrip("\r") for line in self.text.split("\n") if line.strip()]

    @classmethod
    def from_row(cls, row: store.PolicyRow) -> Policy:
        return cls(
            row.domain,
            row.policy_id,
            row.mode,
            tuple(row.mx),
            row.max_age,
            row.text,
            row.fetched_at,
            row.expires_at,
        )

    def as_row(self) -> store.PolicyRow:
        return store.PolicyRow(
            self.domain,
            self.id,
            self.mode,
            list(self.mx),
            self.max_age,
            self.text,
            self.fetched_at,
            self.expires_at,
        )


@dataclass(frozen=True)
class Lookup:
    """The policy that applies to a destination (None: none), and why discovery failed if it did (an
    RFC 8460 result type: `sts-policy-fetch-error`, `sts-policy-invalid`, `sts-webpki-invalid`)."""

    policy: Policy | None
    failure: str | None = None
    detail: str = ""


class PolicyFetchError(Exception):
    def __init__(self, result_type: str, detail: str) -> None:
        super().__init__(detail)
        self.result_type = result_type
        self.detail = detail


def parse_policy(domain: str, policy_id: str, text: str, now: datetime) -> Policy:
    """A policy from the text a policy host served; raises PolicyFetchError (`sts-policy-invalid`)."""
    try:
        parsed = parse_mta_sts_policy(text)["policy"]
    except MTASTSError as exc:
        raise PolicyFetchError(
            "sts-policy-invalid", f"the MTA-STS policy of {domain} is invalid: {exc}"
        ) from exc
    return Policy(
        domain,
        policy_id,
        parsed["mode"],
        tuple(parsed["mx"]),
        parsed["max_age"],
        text,
        now,
        now + timedelta(seconds=parsed["max_age"]),
    )


class MtaSts:
    """Policy discovery and the cache, for one delivery engine."""

    def __init__(
        self,
        db: Database,
        settings: MtaStsSettings,
        clock: Clock,
        resolver: dns.asyncresolver.Resolver,
        resolve_addresses: public_http.Resolve,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.resolver = resolver
        self.resolve_addresses = resolve_addresses
        self.tls = trust_context(settings.ca_file)
        self._cached: dict[str, Policy | None] = {}
        self._busy: dict[str, asyncio.Future[Lookup]] = {}
        self._client: httpx.AsyncClient | None = None

    async def lookup(self, domain: str) -> Lookup:
        """The policy for mail to `domain` now (one discovery at a time per domain)."""
        if not self.settings.enabled:
            return Lookup(None)
        domain = domain.lower().rstrip(".")
        pending = self._busy.get(domain)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Lookup] = asyncio.get_running_loop().create_future()
        self._busy[domain] = future
        try:
            found = await self._discover(domain)
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters (if any) get it too
            raise
        finally:
            del self._busy[domain]

    async def _cached_policy(self, domain: str) -> Policy | None:
        if domain not in self._cached:
            row = await self.db.run(store.newest_policy, domain)
            self._cached[domain] = Policy.from_row(row) if row is not None else None
        policy = self._cached[domain]
        return policy if policy is not None and policy.expires_at > self.clock.now() else None

    async def _discover(self, domain: str) -> Lookup:
        cached = await self._cached_policy(domain)
        try:
            policy_id = await self._record_id(domain)
        except dns.exception.DNSException:  # a lookup that failed for now: keep what we know
            return Lookup(cached)
        if policy_id is None:
            return Lookup(cached)  # RFC 8461 §5.1: a cached policy outlives its TXT record
        if cached is not None and cached.id == policy_id:
            return Lookup(cached)
        try:
            policy = parse_policy(domain, policy_id, await self._fetch(domain), self.clock.now())
        except PolicyFetchError as exc:
            log.warning("MTA-STS: %s", exc.detail)
            return Lookup(cached, exc.result_type, exc.detail)
        await self.db.run(store.save_policy, policy.as_row())
        self._cached[domain] = policy
        log.info(
            "MTA-STS: %s publishes policy %s (%s, max_age %d)", domain, policy.id, policy.mode, policy.max_age
        )
        return Lookup(policy)

    async def _record_id(self, domain: str) -> str | None:
        """The id of the domain's one valid `v=STSv1` record, or None (RFC 8461 §3.1)."""
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        records = [b"".join(r.strings).decode("ascii", errors="replace") for r in answer]
        records = [r for r in records if r.startswith("v=STSv1")]
        if len(records) != 1:
            return None
        try:
            return parse_mta_sts_record(records[0])["tags"]["id"]
        except MTASTSError:
            return None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(self.settings.fetch_timeout)
            self._client = public_http.client(
                timeout,
                httpx.Limits(max_connections=20, max_keepalive_connections=0),
                allow_private=self.settings.allow_private_addresses,
                resolve=self.resolve_addresses,
                ssl_context=self.tls,
            )
        return self._client

    async def _fetch(self, domain: str) -> str:
        port = self.settings.policy_port
        authority = f"mta-sts.{domain}" + (f":{port}" if port != 443 else "")
        url = f"https://{authority}/.well-known/mta-sts.txt"
        try:
            async with (
                asyncio.timeout(self.settings.fetch_timeout),
                self._http().stream("GET", url, headers={"Accept": "text/plain"}) as response,
            ):
                if response.status_code != 200:  # RFC 8461 §3.3: redirects are not followed
                    raise PolicyFetchError(
                        "sts-policy-fetch-error", f"{url} answered HTTP {response.status_code}"
                    )
                media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if media_type != "text/plain":
                    raise PolicyFetchError(
                        "sts-policy-invalid", f"{url} is served as {media_type or 'no type'}, not text/plain"
                    )
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        raise PolicyFetchError("sts-policy-invalid", f"{url} is larger than 64 KiB")
        except httpx.HTTPError as exc:
            raise PolicyFetchError(_fetch_failure(exc), f"{url} could not be fetched: {_cause(exc)}") from exc
        except TimeoutError as exc:
            raise PolicyFetchError(
                "sts-policy-fetch-error", f"{url} could not be fetched: timed out"
            ) from exc
        try:
            return body.decode("ascii")
        except UnicodeDecodeError as exc:
            raise PolicyFetchError("sts-policy-invalid", f"{url} is not ASCII text") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _fetch_failure(exc: BaseException) -> str:
    """`sts-webpki-invalid` when the policy host's certificate did not verify (RFC 8460 §4.3.1)."""
    return "sts-webpki-invalid" if _certificate_error(exc) is not None else "sts-policy-fetch-error"


def _cause(exc: BaseException) -> str:
    found = _certificate_error(exc)
    if found is not None:
        return f"certificate not valid ({found.verify_message})"
    return str(exc) or type(exc).__name__
