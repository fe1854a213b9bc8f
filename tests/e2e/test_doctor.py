"""`estafeta doctor` on a deployment in the simulated world: all checks pass on a healthy one (exit 0, the
JSON shape), and each broken variant fails the right row with the right fix."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from estafeta import doctor
from estafeta.cli import app
from estafeta.config import Settings
from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings
from estafeta.tls import CertificateAuthority
from estafeta.world import World
from tests.ntp_server import NtpServer, start_ntp

DOMAIN = "clinic.test"


@dataclass
class Deployment:
    world: World
    authority: CertificateAuthority
    tmp: Path
    ntp: NtpServer

    def certificate(
        self, name: str, valid_for: timedelta, hostnames: list[str] | None = None
    ) -> dict[str, str]:
        """smtp settings naming a certificate of the test's authority, valid for `valid_for` from now."""
        cert, key = self.authority.issue(
            hostnames or ["mta.estafeta.test"], valid_until=datetime.now(UTC) + valid_for
        )
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
                     **self.certificate("relay", timedelta(days=90))},
            "inbound": {"enabled": True, "host": "127.0.0.1", "port": self.world.smtp_port},
            "mta_sts": {"ca_file": str(ca_file)},
            "doctor": {"ntp_server": self.ntp.address, "timeout": 3},
            "warmup": {"tiers": []},
        }  # fmt: skip
        for key, value in overrides.items():
            values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
        return sandbox_settings(database, self.world.dns_address, self.world.smtp_port, **values)


@pytest.fixture
async def deployment(fresh_world: World, tmp_path: Path) -> AsyncIterator[Deployment]:
    ntp = await start_ntp()
    yield Deployment(fresh_world, CertificateAuthority("Doctor Test CA"), tmp_path, ntp)
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
    account = await core.accounts.create("clinic")
    _, key = await core.domains.add(account.id, DOMAIN, "ed25519-sha256")
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
