"""MTA-STS and TLS-RPT in the simulated world: policies served over HTTPS, certificates a sender can
verify, and a receiver of the TLS reports senders send back.

The world has a certificate authority of its own. MX servers of providers with `certificate="trusted"`
present a certificate it issued for their MX host name, `"wrong-name"` one issued for another name;
a platform that trusts the authority (`World.ca_pem`, `mta_sts.ca_file`) verifies them as it would a
public CA's. Providers with `mta_sts` publish `_mta-sts.<domain>` and serve their policy at
`https://mta-sts.<domain>/.well-known/mta-sts.txt` from one HTTPS server on the world's DNS address
(senders reach it through `mta_sts.policy_port`). Providers with `tls_reports` publish
`_smtp._tls.<domain>` pointing at `mailto:tlsrpt@reports.test` or at this server's
`https://tlsrpt.reports.test:<port>/v1/tlsrpt`. Reports received either way are parsed with parsedmarc,
an implementation independent of the platform's.
"""

from __future__ import annotations

import gzip
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import parsedmarc

from estafeta.tls import CertificateAuthority, generate_self_signed, server_context_from_pem
from estafeta.world.http import LoopbackHttpServer
from estafeta.world.providers import RECORD_TTL, Provider
from estafeta.world.zone import WorldZone

REPORTS_DOMAIN = "reports.test"
REPORT_MAILBOX = f"tlsrpt@{REPORTS_DOMAIN}"
REPORT_HOST = f"tlsrpt.{REPORTS_DOMAIN}"
REPORT_PATH = "/v1/tlsrpt"
POLICY_PATH = "/.well-known/mta-sts.txt"
POLICY_MAX_AGE = 86400


def policy_text(provider: Provider, mode: str | None = None, max_age: int = POLICY_MAX_AGE) -> str:
    """The policy file of a provider (RFC 8461 §3.2), CRLF line ends."""
    patterns = provider.sts_mx or (provider.mx_host,)
    lines = ["version: STSv1", f"mode: {mode or provider.mta_sts}", *(f"mx: {p}" for p in patterns)]
    return "\r\n".join([*lines, f"max_age: {max_age}", ""])


def mx_contexts(providers: Sequence[Provider], authority: CertificateAuthority) -> dict[str, ssl.SSLContext]:
    """The TLS context of each provider's MX server: one shared self-signed certificate for the many, an
    authority-issued one for providers that ask for it."""
    shared = server_context_from_pem(*generate_self_signed([p.mx_host for p in providers]))
    contexts = {}
    for provider in providers:
        if provider.certificate == "trusted":
            contexts[provider.domain] = server_context_from_pem(*authority.issue([provider.mx_host]))
        elif provider.certificate == "wrong-name":
            contexts[provider.domain] = server_context_from_pem(
                *authority.issue([f"other.{provider.domain}"])
            )
        else:
            contexts[provider.domain] = shared
    return contexts


@dataclass(frozen=True)
class Published:
    policy_id: str
    text: str


class PolicyServer(LoopbackHttpServer):
    """The providers' policy hosts and the TLS-RPT endpoint, on one HTTPS server."""

    def __init__(
        self, zone: WorldZone, providers: Sequence[Provider], authority: CertificateAuthority, host: str
    ) -> None:
        names = [f"mta-sts.{p.domain}" for p in providers if p.mta_sts] + [REPORT_HOST]
        super().__init__(host, server_context_from_pem(*authority.issue(names)))
        self._zone = zone
        self._providers = [p for p in providers if p.mta_sts or p.tls_reports]
        self._lock = threading.Lock()
        self._policies: dict[str, Published] = {}
        self._posted: list[bytes] = []
        self._fetches: list[str] = []

    def publish_all(self) -> None:
        """Publish the hosts, every provider's policy and TLS-RPT record (once the port is known)."""
        hosts = [REPORT_HOST] + [f"mta-sts.{p.domain}" for p in self._providers if p.mta_sts]
        for host in hosts:
            self._zone.remove(host, "A")
            self._zone.add(host, "A", self._host, RECORD_TTL)
        for provider in self._providers:
            if provider.mta_sts:
                self.publish(provider.domain, policy_text(provider), "1")
            if provider.tls_reports:
                name = f"_smtp._tls.{provider.domain}"
                self._zone.remove(name, "TXT")
                self._zone.add(name, "TXT", f"v=TLSRPTv1; rua={self.rua(provider)}")

    def rua(self, provider: Provider) -> str:
        if provider.tls_reports == "https":
            return f"https://{REPORT_HOST}:{self.port}{REPORT_PATH}"
        return f"mailto:{REPORT_MAILBOX}"

    def publish(self, domain: str, text: str, policy_id: str) -> None:
        """Serve `text` as the domain's policy and announce it with `id` (thread-safe)."""
        with self._lock:
            self._policies[domain] = Published(policy_id, text)
        self._zone.remove(f"_mta-sts.{domain}", "TXT")
        self._zone.add(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={policy_id}", ttl=0)

    def withdraw(self, domain: str) -> None:
        """Remove the TXT record and stop serving the policy (a sender's cached policy still applies)."""
        with self._lock:
            self._policies.pop(domain, None)
        self._zone.remove(f"_mta-sts.{domain}", "TXT")

    def fetches(self) -> list[str]:
        """Host names whose policy was fetched, oldest first."""
        with self._lock:
            return list(self._fetches)

    def posted(self) -> list[bytes]:
        """Bodies of the TLS reports POSTed, oldest first."""
        with self._lock:
            return list(self._posted)

    def reset(self) -> None:
        with self._lock:
            self._posted.clear()
            self._fetches.clear()
        self.publish_all()

    def respond_to_request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, dict[str, str], bytes]:
        host = headers.get("host", "").rsplit(":", 1)[0].lower()
        if host == REPORT_HOST and target == REPORT_PATH:
            if method != "POST":
                return "405 Method Not Allowed", {}, b""
            if headers.get("content-type", "").split(";")[0].strip().lower() != "application/tlsrpt+gzip":
                return "415 Unsupported Media Type", {}, b""
            with self._lock:
                self._posted.append(body)
            return "200 OK", {}, b""
        if not host.startswith("mta-sts.") or target != POLICY_PATH or method != "GET":
            return "404 Not Found", {}, b""
        with self._lock:
            published = self._policies.get(host.removeprefix("mta-sts."))
            self._fetches.append(host)
        if published is None:
            return "404 Not Found", {}, b""
        return "200 OK", {"Content-Type": "text/plain"}, published.text.encode("ascii")


def parse_tls_report(gzipped_json: bytes) -> dict[str, Any]:
    """A TLS-RPT report as parsedmarc reads it (raises parsedmarc.InvalidSMTPTLSReport)."""
    return dict(parsedmarc.parse_smtp_tls_report_json(gzip.decompress(gzipped_json)))


def parse_tls_report_mail(message: bytes) -> dict[str, Any]:
    """The TLS-RPT report a message carries, as parsedmarc reads it (offline: no lookups)."""
    parsed = parsedmarc.parse_report_email(message, offline=True, always_use_local_files=True)
    if parsed["report_type"] != "smtp_tls":
        raise ValueError(f"not a TLS report but {parsed['report_type']}")
    return dict(parsed["report"])
