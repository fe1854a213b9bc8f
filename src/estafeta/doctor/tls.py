"""The certificate of the relay and the inbound listener (`smtp.tls_cert`): trusted, for our host name,
matching its key, and not about to expire.

Trust is checked as a client would, with cryptography's X.509 path validation against the system's
trust anchors plus `mta_sts.ca_file` (a sandbox's own authority). A certificate is due for renewal when
less than a third of its lifetime is left (where ACME clients renew, at most 30 days before the end) and
fails when less than a tenth (at most 7 days) is left: by then, its renewal has not worked.
"""

from __future__ import annotations

import ssl
import warnings
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from estafeta.config import Settings
from estafeta.doctor.check import Check

END = b"-----END CERTIFICATE-----"
RENEW_FIX = "renew the certificate (e.g. `certbot renew`) and restart `estafeta serve` to load it"


def _anchors(settings: Settings) -> list[x509.Certificate]:
    """The system's trust anchors and `mta_sts.ca_file`'s; one that cryptography cannot read (a few system
    anchors carry serial numbers RFC 5280 forbids) is left out, as it is deprecated already."""
    paths = ssl.get_default_verify_paths()
    anchors: list[x509.Certificate] = []
    for file in (paths.cafile or paths.openssl_cafile, settings.mta_sts.ca_file):
        if file is None or not Path(file).is_file():
            continue
        for block in Path(file).read_bytes().split(END)[:-1]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                try:
                    anchors.append(x509.load_pem_x509_certificate(block + END))
                except ValueError:
                    continue
    return anchors


def _expiry(leaf: x509.Certificate, now: datetime, target: str) -> Check:
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    lifetime, left = end - start, end - now
    when = f"{end:%Y-%m-%d %H:%M} UTC"
    if now < start:
        return Check(
            "TLS certificate expiry",
            target,
            "fail",
            f"not valid before {start:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or install a certificate that is valid now",
        )
    if left <= timedelta(0):
        return Check("TLS certificate expiry", target, "fail", f"expired on {when}", RENEW_FIX)
    days = left.total_seconds() / 86400
    detail = f"expires on {when} (in {days:.0f} days)" if days >= 1 else f"expires on {when} (in hours)"
    if left < min(timedelta(days=7), lifetime / 10):
        return Check(
            "TLS certificate expiry", target, "fail", detail + ": its renewal has not worked", RENEW_FIX
        )
    if left < min(timedelta(days=30), lifetime / 3):
        return Check("TLS certificate expiry", target, "warn", detail + ": due for renewal", RENEW_FIX)
    return Check("TLS certificate expiry", target, "pass", detail)


def check_certificate(settings: Settings, now: datetime) -> list[Check]:
    """Rows for the configured certificate; runs on a worker thread (file reads)."""
    smtp = settings.smtp
    if not smtp.enabled and not (settings.inbound.enabled and settings.inbound.starttls):
        return []
    hostname = settings.hostname
    if smtp.tls_cert is None or smtp.tls_key is None:
        return [
            Check(
                "TLS certificate",
                "smtp.tls_cert",
                "warn",
                "not set: a self-signed certificate is used, which mail clients warn about or refuse",
                f"set smtp.tls_cert and smtp.tls_key to a certificate for {hostname} from a public authority "
                "(e.g. Let's Encrypt)",
            )
        ]
    target = str(smtp.tls_cert)
    try:
        chain = x509.load_pem_x509_certificates(smtp.tls_cert.read_bytes())
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(smtp.tls_cert, smtp.tls_key)
    except (OSError, ValueError, ssl.SSLError) as exc:
        return [
            Check(
                "TLS certificate",
                target,
                "fail",
                f"cannot be loaded with {smtp.tls_key}: {exc}",
                "point smtp.tls_cert at the PEM certificate chain and smtp.tls_key at its private key",
            )
        ]
    leaf, *intermediates = chain
    expiry = _expiry(leaf, now, target)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return [expiry]  # path validation would only repeat it
    verifier = (
        PolicyBuilder().store(Store(_anchors(settings))).time(now).build_server_verifier(DNSName(hostname))
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        return [
            Check(
                "TLS certificate",
                target,
                "fail",
                f"does not verify for {hostname}: {exc}",
                f"install a certificate for {hostname} from a public authority, with its intermediate "
                "certificates after it in smtp.tls_cert",
            ),
            expiry,
        ]
    issuer = leaf.issuer.rfc4514_string()
    return [Check("TLS certificate", target, "pass", f"valid for {hostname}, issued by {issuer}"), expiry]
