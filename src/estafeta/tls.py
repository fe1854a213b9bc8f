"""Certificates for loopback servers (the simulated world, a test relay, first-run setup).

MX servers on the public internet commonly present certificates that senders cannot validate, and
opportunistic STARTTLS still encrypts. A self-signed certificate reproduces that case without a CA.
Where a sender must validate (MTA-STS, RFC 8461), a small certificate authority issues certificates that a
platform trusts by adding the authority's certificate to its trust anchors (`mta_sts.ca_file`).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import idna
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = timedelta(days=3650)


def _subject_alternative_name(hostnames: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name if name.isascii() else idna.encode(name).decode("ascii")))
    return x509.SubjectAlternativeName(entries)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _server_certificate(
    hostnames: list[str],
    issuer: x509.Name | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    *,
    valid_until: datetime | None = None,
) -> tuple[bytes, bytes]:
    if not hostnames:
        raise ValueError("at least one hostname is required")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.now(UTC)
    until = valid_until or now + VALIDITY
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, until) - timedelta(days=1))
        .not_valid_after(until)
        .add_extension(_subject_alternative_name(hostnames), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if issuer_key is not None:  # strict X.509 verification wants the issuer's key named
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(authority, critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def generate_self_signed(hostnames: list[str]) -> tuple[bytes, bytes]:
    """Return (certificate PEM, private key PEM) for an ECDSA P-256 key valid ten years for `hostnames`.

    The first name is the subject CN; every name is a SAN (an IP SAN when it parses as an address).
    P-256 rather than RSA because generation is instant, which matters when every test world makes one.
    """
    return _server_certificate(hostnames)


class CertificateAuthority:
    """A certificate authority of its own (the simulated world's): issues server certificates that verify
    for whoever trusts `certificate_pem`."""

    def __init__(self, name: str = "Estafeta World CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, hostnames: list[str], *, valid_until: datetime | None = None) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) for `hostnames`, signed by this authority; `valid_until` in
        the past makes an expired one."""
        return _server_certificate(hostnames, self.name, self._key, valid_until=valid_until)


def trust_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A client context that verifies certificates and host names against the system's trust anchors, plus
    those in `ca_file` (PEM) when given."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def write_self_signed(cert_path: str | Path, key_path: str | Path, hostnames: list[str]) -> None:
    """Generate a certificate for `hostnames` and write it; the key file is readable by its owner only."""
    cert_pem, key_pem = generate_self_signed(hostnames)
    Path(cert_path).write_bytes(cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key_pem)


def server_context(cert_pem_path: str | Path, key_pem_path: str | Path) -> ssl.SSLContext:
    """A server-side context that asks nothing of clients (SMTP clients rarely hold certificates)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_pem_path, key_pem_path)
    return context


def server_context_from_pem(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """`server_context` for in-memory PEM; `ssl` only loads files, so they live briefly in a private dir."""
    with tempfile.TemporaryDirectory(prefix="estafeta-tls-") as directory:
        cert_path = Path(directory, "cert.pem")
        key_path = Path(directory, "key.pem")
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        return server_context(cert_path, key_path)
