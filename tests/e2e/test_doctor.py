"""`estafeta doctor` on a deployment in the simulated world: all checks pass on a healthy one (exit 0, the
JSON shape), and each broken variant fails the right row with the right fix."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from estafeta import doctor
from estafeta.audit import SYSTEM
from estafeta.cli import app
from estafeta.config import Settings
from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings
from estafeta.store.db import Database
from estafeta.world import World
from tests.ntp_server import NtpServer, start_ntp

DOMAIN = "clinic.test"
GROUPS = ("api", "smtp", "inbound", "mta_sts", "doctor")  # settings groups that overrides amend


class Authority:
    """A certificate authority made here with cryptography, issuing certificates of any validity period."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Doctor Test CA")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.certificate_pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, hostnames: list[str], not_before: datetime, not_after: datetime) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass
class Deployment:
    world: World
    authority: Authority
    tmp: Path
    ntp: NtpServer

    def certificate(
        self,
        name: str,
        left: timedelta,
        lifetime: timedelta = timedelta(days=90),
        host: str = "mta.estafeta.test",
    ) -> dict[str, str]:
        """smtp settings naming a certificate of the test's authority for `host` with `left` of its
        `lifetime` to run."""
        end = datetime.now(UTC) + left
        cert, key = self.authority.issue([host], end - lifetime, end)
        (self.tmp / f"{name}.pem").write_bytes(cert)
        (self.tmp / f"{name}.key").write_bytes(key)
        return {"tls_cert": str(self.tmp / f"{name}.pem"), "tls_key": str(self.tmp / f"{name}.key")}

    def settings(self, database: str, **overrides: Any) -> Settings:
        """A sandbox deployment: two pool addresses, the relay with a trusted certificate, the inbound
        listener where the return-path MX points (port 25 of the world: `delivery.smtp_port`)."""
        ca_file = self.tmp / "anchors.pem"
        ca_file.write_bytes(self.world.ca_pem + self.authority.certificate_pem)
        values: dict[str, Any] = {
            "ip_pools": {"transactional": ["127.0.0.2", "127.0.0.3"]},
            "smtp": {"host": "127.0.0.1", "starttls_port": 0, "implicit_tls_port": 0,
                     **self.certificate("relay", timedelta(days=60))},
            "inbound": {"enabled": True, "host": "127.0.0.1", "port": self.world.smtp_port},
            "mta_sts": {"ca_file": str(ca_file)},
            "doctor": {"ntp_server": self.ntp.address, "timeout": 3},
            "api": {"port": 0},
            "warmup": {"tiers": []},
        }  # fmt: skip
        for key, value in overrides.items():
            values[key] = {**values[key], **value} if key in GROUPS else value
        return sandbox_settings(database, self.world.dns_address, self.world.smtp_port, **values)


@pytest.fixture
async def deployment(fresh_world: World, tmp_path: Path) -> AsyncIterator[Deployment]:
    ntp = await start_ntp()
    yield Deployment(fresh_world, Authority(), tmp_path, ntp)
    ntp.close()


def _running(settings: Settings, platform: Platform) -> Settings:
    """The settings as the running deployment has them: the ports it was given (0) are the bound ones."""
    assert platform.smtp_ports is not None and platform.inbound_address is not None
    return settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"port": platform.api_port}),
            "smtp": settings.smtp.model_copy(
                update={
                    "starttls_port": platform.smtp_ports.starttls,
                    "implicit_tls_port": platform.smtp_ports.implicit_tls,
                }
            ),
        }
    )


async def _publish_domain(platform: Platform, world: World) -> None:
    core = platform.core
    account = await core.accounts.create("clinic", actor=SYSTEM)
    _, key = await core.domains.add(account.id, DOMAIN, "ed25519-sha256", actor=SYSTEM)
    world.zone.remove(key.record_name, "TXT")
    world.zone.add(key.record_name, "TXT", key.record_value)
    world.zone.remove(DOMAIN, "TXT")
    world.zone.add(DOMAIN, "TXT", "v=spf1 ip4:127.0.0.0/8 ~all")
    world.zone.remove(f"_dmarc.{DOMAIN}", "TXT")
    world.zone.add(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=none; rua=mailto:{core.settings.dmarc_rua}")


def _env(settings: Settings) -> dict[str, str | None]:
    """The settings as ESTAFETA_* variables (nested groups and lists as JSON), as a service unit sets them."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ESTAFETA_")}
    for key, value in settings.model_dump(mode="json", by_alias=True).items():
        env[f"ESTAFETA_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


async def _estafeta(settings: Settings, *args: str) -> tuple[int, str]:
    """Run the command line (on a thread: the deployment answers from this test's event loop)."""
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, list(args), env=_env(settings), terminal_width=200)
    return result.exit_code, result.output


def _rows(checks: list[doctor.Check], name: str) -> list[doctor.Check]:
    return [check for check in checks if check.check == name]


async def test_a_healthy_deployment_passes_every_check(deployment: Deployment, tmp_path: Path) -> None:
    settings = deployment.settings(f"sqlite:///{tmp_path / 'doctor.db'}")
    platform = Platform(settings)
    await _publish_domain(platform, deployment.world)
    await platform.start(delivery=False, smtp=True)
    try:
        running = _running(settings, platform)
        code, out = await _estafeta(running, "doctor", "--json")
        assert code == 0, out
        report = json.loads(out)
        assert report["ok"] is True
        assert {tuple(row) for row in report["checks"]} == {("check", "target", "status", "detail", "fix")}
        rows = [doctor.Check(**row) for row in report["checks"]]
        assert [row for row in rows if row.status != "pass"] == []
        names = {row.check for row in rows}
        assert names >= {
            "database reachable", "database schema", "clock: database", "clock: NTP", "port: API",
            "port: relay (STARTTLS)", "port: relay (TLS)", "port: inbound listener", "TLS certificate",
            "TLS certificate expiry", "reverse DNS and HELO", "SPF of the return path", "inbound via MX",
            "DKIM", "SPF", "DMARC",
        }  # fmt: skip
        assert {row.target for row in _rows(rows, "reverse DNS and HELO")} == {
            "127.0.0.2 (pool transactional)",
            "127.0.0.3 (pool transactional)",
        }
        assert _rows(rows, "DKIM")[0].target.endswith(f"._domainkey.{DOMAIN}")
        (mx,) = _rows(rows, "inbound via MX")
        assert mx.target == f"mta.estafeta.test (127.0.0.1) port {deployment.world.smtp_port}"
        assert "Estafeta ESMTP" in mx.detail

        code, table = await _estafeta(running, "doctor")
        assert code == 0, table
        assert "estafeta doctor" in table and f"{len(rows)} pass, 0 warn, 0 fail" in table
    finally:
        await platform.stop(grace=1)


def _one(checks: list[doctor.Check], name: str, target: str | None = None) -> doctor.Check:
    (row,) = [c for c in _rows(checks, name) if target is None or c.target == target]
    return row


async def test_a_sending_address_without_ptr_fails_reverse_dns_and_spf(
    deployment: Deployment, tmp_path: Path
) -> None:
    settings = deployment.settings(
        f"sqlite:///{tmp_path / 'none.db'}", ip_pools={"transactional": ["127.0.0.2", "127.0.0.77"]}
    )
    checks = await doctor.run(settings)
    assert doctor.failed(checks)
    assert _one(checks, "reverse DNS and HELO", "127.0.0.2 (pool transactional)").status == "pass"
    ptr = _one(checks, "reverse DNS and HELO", "127.0.0.77 (pool transactional)")
    assert (ptr.status, ptr.detail) == ("fail", "127.0.0.77 has no PTR record")
    assert "publish `77.0.0.127.in-addr.arpa PTR <host name>`" in ptr.fix
    spf = _one(checks, "SPF of the return path", "bounces.estafeta.test for 127.0.0.77 (pool transactional)")
    assert spf.status == "fail" and spf.detail.startswith("fail:")
    assert spf.fix.startswith("add ip4:127.0.0.77 to the SPF record of bounces.estafeta.test: `v=spf1 ")
    passing = _one(
        checks, "SPF of the return path", "bounces.estafeta.test for 127.0.0.2 (pool transactional)"
    )
    assert passing.status == "pass"


async def test_without_pools_the_hostname_is_the_sending_address(
    deployment: Deployment, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'none.db'}"

    async def row(hostname: str) -> doctor.Check:
        settings = deployment.settings(database, ip_pools={}, hostname=hostname)
        return _one(await doctor.run(settings), "reverse DNS and HELO")

    assert await row("mta.estafeta.test") == doctor.Check(
        "reverse DNS and HELO",
        "127.0.0.1 (mta.estafeta.test)",
        "pass",
        "PTR mta.estafeta.test resolves back; greets as mta.estafeta.test",
    )
    deployment.world.zone.add("alias.clinic.test", "A", "127.0.0.2")
    try:
        alias = await row("alias.clinic.test")
    finally:
        deployment.world.zone.remove("alias.clinic.test", "A")
    assert alias.status == "fail"
    assert (
        alias.detail
        == "the PTR name of 127.0.0.2 is mta2.estafeta.test, but the platform greets as alias.clinic.test"
    )
    assert alias.fix.startswith('set hostname = "mta2.estafeta.test"')
    nowhere = await row("nowhere.clinic.test")
    assert (nowhere.status, nowhere.target) == ("fail", "nowhere.clinic.test")
    assert nowhere.fix.startswith("publish `nowhere.clinic.test A <this machine's outbound address>`")


async def _certificate_rows(deployment: Deployment, tmp_path: Path, **certificate: Any) -> list[doctor.Check]:
    smtp = deployment.certificate("checked", **certificate)
    settings = deployment.settings(f"sqlite:///{tmp_path / 'none.db'}", smtp=smtp)
    return [c for c in await doctor.run(settings) if c.check.startswith("TLS certificate")]


async def test_certificates_expired_near_expiry_or_for_another_host_fail(
    deployment: Deployment, tmp_path: Path
) -> None:
    good = await _certificate_rows(deployment, tmp_path, left=timedelta(days=60))
    assert [(c.check, c.status) for c in good] == [
        ("TLS certificate", "pass"),
        ("TLS certificate expiry", "pass"),
    ]
    assert good[0].detail == "valid for mta.estafeta.test, issued by CN=Doctor Test CA"

    (expired,) = await _certificate_rows(deployment, tmp_path, left=-timedelta(days=1))
    assert expired.status == "fail" and expired.detail.startswith("expired on ")
    assert expired.fix.startswith("renew the certificate")

    valid, near = await _certificate_rows(deployment, tmp_path, left=timedelta(days=2))
    assert valid.status == "pass"
    assert (near.status, near.fix) == ("fail", expired.fix)
    assert near.detail.endswith("(in 2 days): its renewal has not worked")

    _, due = await _certificate_rows(deployment, tmp_path, left=timedelta(days=20))
    assert due.status == "warn" and due.detail.endswith("(in 20 days): due for renewal")
    # A short-lived certificate is judged by its own lifetime: 2 of 6 days left is not late.
    _, short = await _certificate_rows(
        deployment, tmp_path, left=timedelta(days=2, hours=1), lifetime=timedelta(days=6)
    )
    assert short.status == "pass"

    other, _ = await _certificate_rows(deployment, tmp_path, left=timedelta(days=60), host="www.clinic.test")
    assert other.status == "fail" and other.detail.startswith("does not verify for mta.estafeta.test")
    assert other.fix.startswith("install a certificate for mta.estafeta.test from a public authority")


async def test_a_certificate_of_an_unknown_authority_or_without_its_key_fails(
    deployment: Deployment, tmp_path: Path
) -> None:
    smtp = deployment.certificate("checked", left=timedelta(days=60))
    database = f"sqlite:///{tmp_path / 'none.db'}"
    untrusted = deployment.settings(database, smtp=smtp, mta_sts={"ca_file": None})
    row = _one(await doctor.run(untrusted), "TLS certificate")
    assert row.status == "fail" and row.detail.startswith("does not verify for mta.estafeta.test")
    other_key = deployment.certificate("other", left=timedelta(days=60))["tls_key"]
    mismatched = deployment.settings(database, smtp={**smtp, "tls_key": other_key})
    row = _one(await doctor.run(mismatched), "TLS certificate")
    assert row.status == "fail" and "cannot be loaded" in row.detail
    assert row.fix == "point smtp.tls_cert at the PEM certificate chain and smtp.tls_key at its private key"
    unset = deployment.settings(database, smtp={"tls_cert": None, "tls_key": None})
    row = _one(await doctor.run(unset), "TLS certificate")
    assert row.status == "warn" and row.fix.startswith("set smtp.tls_cert and smtp.tls_key")


async def test_a_database_not_migrated_or_unreachable_fails(deployment: Deployment, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    checks = await doctor.run(deployment.settings(f"sqlite:///{missing}"))
    row = _one(checks, "database reachable")
    assert (row.status, row.detail) == ("fail", f"{missing} does not exist")
    assert not missing.exists()  # the doctor changes nothing
    assert _one(checks, "sending domains").status == "warn"
    code, out = await _estafeta(deployment.settings(f"sqlite:///{missing}"), "doctor", "--json")
    assert code == 1 and json.loads(out)["ok"] is False

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    checks = await doctor.run(deployment.settings(f"sqlite:///{empty}"))
    assert _one(checks, "database reachable").status == "pass"
    schema = _one(checks, "database schema")
    assert schema.status == "fail" and schema.detail.startswith(
        "at no schema (never migrated); this version expects "
    )
    assert schema.fix.startswith("run `estafeta serve`")

    Database(f"sqlite:///{empty}").migrate()
    checks = await doctor.run(deployment.settings(f"sqlite:///{empty}"))
    assert _one(checks, "database schema").status == "pass"
    assert _one(checks, "clock: database").detail == "SQLite runs on this machine's clock"


async def test_postgresql_is_compared_with_this_clock(deployment: Deployment, pg_url: str) -> None:
    Database(pg_url).migrate()
    checks = await doctor.run(deployment.settings(pg_url))
    assert _one(checks, "database reachable").detail == "connected (postgresql)"
    clock = _one(checks, "clock: database")
    assert clock.status == "pass" and "database server's clock is" in clock.detail
    checks = await doctor.run(deployment.settings("postgresql://postgres@127.0.0.1:1/test"))
    row = _one(checks, "database reachable")
    assert row.status == "fail" and row.target == "postgresql+psycopg://postgres@127.0.0.1:1/test"
    assert row.fix.startswith("start the database server, or fix database_url")


async def test_ports_held_by_another_program_fail_and_free_ones_warn(
    deployment: Deployment, tmp_path: Path
) -> None:
    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 other.example ESMTP Postfix\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    taken = server.sockets[0].getsockname()[1]
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    try:
        settings = deployment.settings(
            f"sqlite:///{tmp_path / 'none.db'}",
            api={"port": taken},
            smtp={"starttls_port": taken, "implicit_tls_port": free_port},
        )
        checks = await doctor.run(settings)
    finally:
        server.close()
        await server.wait_closed()
    for name in ("port: API", "port: relay (STARTTLS)"):
        row = _one(checks, name)
        assert (row.target, row.status) == (f"127.0.0.1:{taken}", "fail")
        assert row.detail == "another program listens there (it does not answer as Estafeta)"
        assert row.fix.startswith(f"stop the program that holds 127.0.0.1:{taken}")
    row = _one(checks, "port: relay (TLS)")
    assert (row.status, row.detail, row.fix) == (
        "warn", "nothing listens; the port is free to bind", "start `estafeta serve`",
    )  # fmt: skip


async def test_the_inbound_listener_must_be_reachable_through_the_return_path_mx(
    deployment: Deployment, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'none.db'}"
    zone = deployment.world.zone
    zone.add("returns.clinic.test", "MX", "10 void.clinic.test.")
    try:
        checks = await doctor.run(deployment.settings(database, return_path_domain="returns.clinic.test"))
    finally:
        zone.remove("returns.clinic.test", "MX")
    row = _one(checks, "inbound via MX")
    assert (row.target, row.status) == ("void.clinic.test", "fail")
    assert row.detail == "MX host void.clinic.test has no address (A/AAAA record)"
    assert row.fix.startswith("publish `void.clinic.test A <public address")

    row = _one(
        await doctor.run(deployment.settings(database, return_path_domain="nomx.clinic.test")),
        "inbound via MX",
    )
    assert (row.status, row.detail) == ("fail", "nomx.clinic.test has no MX record")
    assert (
        row.fix
        == "publish `nomx.clinic.test MX 10 mta.estafeta.test` and `mta.estafeta.test A <public address>`"
    )

    # The MX is right, but nothing runs there: the deployment is down.
    row = _one(await doctor.run(deployment.settings(database)), "inbound via MX")
    assert row.target == f"mta.estafeta.test (127.0.0.1) port {deployment.world.smtp_port}"
    assert row.status == "fail" and row.detail.startswith("no SMTP service reached")
    assert row.fix.startswith("run `estafeta serve` with inbound.enabled on this machine")


async def test_a_clock_off_the_ntp_server_fails(deployment: Deployment, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'none.db'}"
    deployment.ntp.offset = 120.0
    row = _one(await doctor.run(deployment.settings(database)), "clock: NTP")
    assert row.status == "fail"
    assert re.fullmatch(
        r"this machine's clock is 1[12]\d\.\d{3} s behind the server's \(more than 2 s\)", row.detail
    )
    assert row.fix == "synchronise this machine's clock with NTP (chrony or systemd-timesyncd)"
    deployment.ntp.offset = 0.0
    row = _one(await doctor.run(deployment.settings(database)), "clock: NTP")
    assert row.status == "pass"
    row = _one(await doctor.run(deployment.settings(database, doctor={"ntp_server": ""})), "clock: NTP")
    assert row.status == "warn" and row.fix.startswith("set doctor.ntp_server")


async def test_a_return_path_spf_over_ten_lookups_fails(deployment: Deployment, tmp_path: Path) -> None:
    zone = deployment.world.zone
    includes = [f"l{n}.clinic.test" for n in range(11)]
    zone.add(
        "loops.clinic.test", "TXT", "v=spf1 " + " ".join(f"include:{name}" for name in includes) + " -all"
    )
    for name in includes:
        zone.add(name, "TXT", "v=spf1 -all")
    try:
        settings = deployment.settings(
            f"sqlite:///{tmp_path / 'none.db'}", return_path_domain="loops.clinic.test"
        )
        rows = _rows(await doctor.run(settings), "SPF of the return path")
    finally:
        for name in ["loops.clinic.test", *includes]:
            zone.remove(name, "TXT")
    assert [row.status for row in rows] == ["fail", "fail"]
    assert rows[0].detail.startswith("permerror:")
    assert rows[0].fix.startswith("correct the SPF record of loops.clinic.test (at most 10 DNS lookups)")


async def test_a_sending_domain_without_its_records_fails_with_the_records_to_publish(
    deployment: Deployment, tmp_path: Path
) -> None:
    settings = deployment.settings(f"sqlite:///{tmp_path / 'domains.db'}")
    platform = Platform(settings)
    await _publish_domain(platform, deployment.world)
    platform.core.close()
    deployment.world.zone.remove(f"_dmarc.{DOMAIN}", "TXT")
    checks = await doctor.run(settings)
    dmarc = _one(checks, "DMARC")
    assert (dmarc.target, dmarc.status) == (f"_dmarc.{DOMAIN}", "fail")
    assert dmarc.fix.startswith(f'publish `_dmarc.{DOMAIN} TXT "v=DMARC1; ')
    assert "rua=mailto:dmarc@bounces.estafeta.test" in dmarc.fix
    assert _one(checks, "DKIM").status == "pass"
    assert _one(checks, "SPF", f"{DOMAIN} for 127.0.0.2").status == "pass"
