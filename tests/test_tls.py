"""Self-signed certificates: their contents, and real TLS handshakes on loopback against them."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from estafeta.tls import generate_self_signed, server_context, write_self_signed


def test_certificate_names_every_host_and_address() -> None:
    cert_pem, key_pem = generate_self_signed(["mx.acme.test", "127.0.0.1", "bücher.test"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mx.acme.test", "xn--bcher-kva.test"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.subject.rfc4514_string() == "CN=mx.acme.test"
    assert cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=3640)
    assert cert.not_valid_before_utc < datetime.now(UTC)
    assert b"PRIVATE KEY" in key_pem


def test_no_hostnames_is_an_error() -> None:
    with pytest.raises(ValueError):
        generate_self_signed([])


def test_written_key_is_private_to_its_owner(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert_path, key_path, ["mx.acme.test"])
    assert x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


async def handshake(tmp_path: Path, server_hostname: str) -> bytes:
    """Serve TLS with `server_context` on loopback; a verifying client checks `server_hostname`."""
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert_path, key_path, ["mx.acme.test", "127.0.0.1"])

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=server_context(cert_path, key_path))
    port = server.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context(cafile=str(cert_path))
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname=server_hostname
        )
        line = await reader.readline()
        writer.close()
        return line
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("name", ["mx.acme.test", "127.0.0.1"])
async def test_clients_that_trust_the_certificate_verify_it(tmp_path: Path, name: str) -> None:
    assert await handshake(tmp_path, name) == b"hello\n"


async def test_a_name_not_in_the_certificate_fails_verification(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(tmp_path, "other.test")
