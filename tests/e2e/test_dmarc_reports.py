"""DMARC aggregate reports from the world's receivers reach the inbound listener, and the API and the CLI
show per domain who sends with it: the platform, and one unknown sender."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from estafeta.audit import SYSTEM
from estafeta.cli import app
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness

RUA = "dmarc@bounces.estafeta.test"


@pytest.fixture
async def reporting(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    fresh_world.zone.remove("_dmarc.acme.test", "TXT")
    fresh_world.zone.add("_dmarc.acme.test", "TXT", f"v=DMARC1; p=none; rua=mailto:{RUA}")
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'dmarc.db'}", reports=True)
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)
    fresh_world.zone.remove("_dmarc.acme.test", "TXT")


async def _view(h: Harness, reports: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await h.client.get("/v1/domains/acme.test/dmarc")
        assert response.status_code == 200, response.text
        if response.json()["reports"] >= reports:
            return dict(response.json())
        assert time.monotonic() < deadline, response.json()
        await asyncio.sleep(0.05)


async def test_receivers_reports_show_our_sources_and_an_unknown_sender(reporting: Harness) -> None:
    h = reporting
    sent = [await h.send(to=[f"user{i}@{'gmail' if i % 2 else 'yahoo'}.test"]) for i in range(6)]
    for message_id in sent:
        await h.wait_state(message_id, "delivered")
    assert h.world.send_dmarc_reports() == 2  # gmail.test (zip) and yahoo.test (gzip)

    view = await _view(h, reports=2)
    assert view["reporters"] == ["gmail.test", "yahoo.test"]
    assert view["messages"] == 6 + 2 * 3  # our six, and the unknown sender's three in each report
    ours, unknown = view["sources"]
    assert ours == {
        "ip": "127.0.0.1",
        "ptr": "mta.estafeta.test",
        "messages": 6,
        "dkim_pass": 6,
        "spf_pass": 0,  # SPF passes for the return path's domain, which is not aligned with acme.test
        "dmarc_pass": 6,
        "ours": True,
        "reporters": ["gmail.test", "yahoo.test"],
    }
    assert unknown["ip"] == "203.0.113.66" and unknown["ptr"] is None and not unknown["ours"]
    assert unknown["messages"] == 6 and unknown["dmarc_pass"] == 0
    assert view["unknown_senders"] == [unknown]
    assert view["dkim_pass_rate"] == 0.5 and view["spf_pass_rate"] == 0.0

    env = {
        "ESTAFETA_DATABASE_URL": h.platform.settings.database_url,
        "ESTAFETA_HOSTNAME": "mta.estafeta.test",
        "ESTAFETA_DNS_SERVERS": json.dumps(h.platform.settings.dns_servers),
        "COLUMNS": "160",
    }
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["domains", "dmarc", "acme.test", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["unknown_senders"][0]["ip"] == "203.0.113.66"
    table = await asyncio.to_thread(CliRunner().invoke, app, ["domains", "dmarc", "acme.test"], env=env)
    assert table.exit_code == 0, table.output
    assert "203.0.113.66" in table.output and "unknown" in table.output
    assert "1 unknown sender(s) used acme.test for 6 messages" in table.output


async def test_another_accounts_domain_is_not_shown(reporting: Harness) -> None:
    core = reporting.platform.core
    other = await core.accounts.create("globex", actor=SYSTEM)
    token = (await core.api_keys.create(other.id, "t", actor=SYSTEM)).token
    response = await reporting.client.get(
        "/v1/domains/acme.test/dmarc", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await reporting.client.get("/v1/domains/nope.test/dmarc")).status_code == 404
