"""Only verified domains send: the API answers 403 with what to fix (the relay's 550 5.7.1 is in
test_smtp_relay.py), until the domain's records are published and verified (by API or command line)
against the world's DNS server."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from estafeta.audit import SYSTEM
from estafeta.cli import app as cli_app
from estafeta.core import Core
from estafeta.domains import dns_records
from estafeta.sandbox import sandbox_settings
from tests.e2e.harness import Harness


async def _unpublished_domain(h: Harness, name: str) -> None:
    """Register `name` to the harness's account from a core that cannot publish records (as in production,
    where the domain's owner publishes them)."""
    settings = sandbox_settings(
        h.platform.settings.database_url, h.world.dns_address, h.world.smtp_port, domains={"dns_update": None}
    )
    core = Core(settings)
    try:
        await core.domains.add(h.account_id, name, "ed25519-sha256", actor=SYSTEM)
    finally:
        core.close()


async def _publish(h: Harness, name: str) -> None:
    """What the domain's owner does: publish the TXT records `estafeta domains dns` shows."""
    row = await h.platform.core.domains.lookup(name)
    for record in dns_records(row, h.platform.settings):
        if record.type == "TXT":
            h.world.zone.remove(record.name, "TXT")
            h.world.zone.add(record.name, "TXT", record.value)


async def test_the_api_refuses_an_unverified_domain_until_it_verifies(harness: Harness) -> None:
    await _unpublished_domain(harness, "late.test")
    body = {"from": "News <news@late.test>", "to": ["ana@gmail.test"], "subject": "Hi", "text": "Hi.\n"}
    refused = await harness.client.post("/v1/messages", json=body)
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "/problems/domain-not-verified"
    assert "sending domain late.test is not verified yet" in problem["detail"]
    assert "DKIM" in problem["detail"] and "estafeta domains verify late.test" in problem["detail"]

    state = await harness.client.get("/v1/domains/late.test")
    assert state.status_code == 200 and state.json()["state"] == "pending"
    await _publish(harness, "late.test")
    verified = await harness.client.post("/v1/domains/late.test/verify")
    assert verified.status_code == 200, verified.text
    status = verified.json()
    assert status["state"] == "verified" and status["may_send"] is True
    dkim = next(c for c in status["checks"] if c["check"].startswith("DKIM"))
    assert dkim["status"] == "ok" and dkim["found"] == [dkim["expected"]]
    sent = await harness.client.post("/v1/messages", json=body)
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["messages"][0]["id"]
    await harness.wait_state(message_id, "delivered")


async def test_another_accounts_domain_is_not_found(harness: Harness) -> None:
    other = await harness.platform.core.accounts.create("globex", actor=SYSTEM)
    await harness.platform.core.domains.add(other.id, "globex-verify.test", "ed25519-sha256", actor=SYSTEM)
    for response in (
        await harness.client.post("/v1/domains/globex-verify.test/verify"),
        await harness.client.get("/v1/domains/globex-verify.test"),
        await harness.client.get("/v1/domains/nowhere.test"),
    ):
        assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
        assert "is not a sending domain of this account" in response.json()["detail"]
    spec = (await harness.client.get("/openapi.json")).json()
    assert "DomainStatusOut" in spec["components"]["schemas"]
    assert "post" in spec["paths"]["/v1/domains/{domain}/verify"]


async def test_verify_on_the_command_line(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = harness.platform.settings
    monkeypatch.setenv("ESTAFETA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ESTAFETA_DNS_SERVERS", json.dumps(settings.dns_servers))
    monkeypatch.setenv("ESTAFETA_HOSTNAME", settings.hostname)
    monkeypatch.setenv("ESTAFETA_RETURN_PATH_DOMAIN", settings.return_path_domain)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    good = await asyncio.to_thread(runner.invoke, cli_app, ["domains", "verify", "acme.test"])
    assert good.exit_code == 0, good.output
    assert "acme.test: verified" in good.output
    harness.world.zone.remove("_dmarc.acme.test", "TXT")
    bad = await asyncio.to_thread(runner.invoke, cli_app, ["domains", "verify", "acme.test", "--json"])
    assert bad.exit_code == 1, bad.output  # failing: it still sends during the grace period, but needs a fix
    report = json.loads(bad.output)
    assert report["state"] == "failing" and report["sending_stops_at"]
    dmarc = next(c for c in report["checks"] if c["check"] == "DMARC")
    assert dmarc["status"] == "missing" and dmarc["found"] == []
    assert dmarc["expected"] == "v=DMARC1; p=none; rua=mailto:dmarc@bounces.estafeta.test"
    await _unpublished_domain(harness, "cli-late.test")
    pending = await asyncio.to_thread(runner.invoke, cli_app, ["domains", "verify", "cli-late.test"])
    assert pending.exit_code == 1
    assert "cli-late.test: pending" in pending.output and "To fix: DKIM" in pending.output
    unknown = await asyncio.to_thread(runner.invoke, cli_app, ["domains", "verify", "nowhere.test"])
    assert unknown.exit_code != 0 and "not registered" in unknown.output
