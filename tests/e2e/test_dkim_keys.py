"""DKIM key rotation and dual signing end to end, verified by dmarc.test's two independent verifiers."""

from __future__ import annotations

import email
import json
from collections.abc import AsyncIterator, Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from estafeta.cli import app
from estafeta.dkim_keys import SIGNER_REFRESH
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness
from tests.factories import add_verified_domain

REFRESH = SIGNER_REFRESH.total_seconds() + 1
RETRY = 3600  # a deferred message waits longer than the rotation steps below take on the manual clock


@pytest.fixture
async def harness(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    """A platform whose operator publishes new keys by hand: its domains were set up in the sandbox's DNS,
    then `domains.dns_update` is taken away."""
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", delivery={"retry_schedule": [RETRY]}
    )
    h.platform.core.settings.domains.dns_update = None
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


@pytest.fixture
async def sandbox(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    """A sandbox platform as `estafeta demo` makes one: it publishes records in the world's DNS itself."""
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}")
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


def reject_policy(world: World, domain: str) -> None:
    """The domain's DMARC record becomes p=reject (in place of the sandbox's p=none)."""
    world.zone.remove(f"_dmarc.{domain}", "TXT")
    world.zone.add(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=reject")


@pytest.fixture
def dmarc_reject(fresh_world: World) -> Iterator[None]:
    """acme.test publishes DMARC p=reject (removed afterwards: the world outlives the test; the next
    platform's `domains add` publishes its own record again)."""
    reject_policy(fresh_world, "acme.test")
    yield
    for domain in ("acme.test", "nokey.test"):
        fresh_world.zone.remove(f"_dmarc.{domain}", "TXT")


def publish(world: World, record: dict[str, Any]) -> None:
    world.zone.remove(record["name"], "TXT")  # a selector of an earlier test may be there
    world.zone.add(record["name"], "TXT", record["value"])


def signatures(data: bytes) -> list[str]:
    """The s= of each DKIM-Signature, top first."""
    parsed = email.message_from_bytes(data, policy=policy.default)
    found = []
    for value in parsed.get_all("DKIM-Signature", []):
        tags = dict(part.strip().split("=", 1) for part in "".join(str(value).split()).split(";") if part)
        found.append(tags["s"])
    return found


async def check(harness: Harness) -> dict[str, str]:
    """Run the key check (the platform's scheduler may have run it too) and read each key's state."""
    await harness.platform.core.dkim_keys.check()
    return {selector: key["state"] for selector, key in (await keys(harness)).items()}


async def keys(harness: Harness) -> dict[str, dict[str, Any]]:
    response = await harness.client.get("/v1/domains/acme.test/keys")
    assert response.status_code == 200, response.text
    return {key["selector"]: key for key in response.json()["data"]}


async def send_to_dmarc(harness: Harness, subject: str) -> bytes:
    before = len(harness.world.received("dmarc.test"))
    message_id = await harness.send(to=["ann@dmarc.test"], subject=subject)
    await harness.wait_state(message_id, "delivered")
    received = harness.world.received("dmarc.test")
    assert len(received) == before + 1
    return received[-1].data


async def test_rotation_signs_with_the_new_key_only_once_in_dns_and_retires_the_old_one_when_drained(
    harness: Harness, dmarc_reject: None
) -> None:
    core = harness.platform.core
    (old,) = (await keys(harness)).values()
    assert old["state"] == "active"

    # A message signed with the old key waits for a retry (outlook.test defers it once).
    harness.world.script("late@outlook.test", ["451 4.3.0 Try again later"])
    waiting = await harness.send(to=["late@outlook.test"], subject="Waiting")
    await harness.wait_state(waiting, "deferred")

    rotated = await harness.client.post("/v1/domains/acme.test/keys/rotate")
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["state"] == "pending" and new["selector"] == "est20260101r"
    assert new["record"]["name"] == "est20260101r._domainkey.acme.test"
    again = await harness.client.post("/v1/domains/acme.test/keys/rotate")
    assert again.status_code == 409  # one rotation at a time

    # Not in DNS yet: the check leaves it pending, and mail is still signed with the old key only.
    assert await check(harness) == {old["selector"]: "active", new["selector"]: "pending"}
    harness.advance(REFRESH)
    assert signatures(await send_to_dmarc(harness, "Before")) == [old["selector"]]

    publish(harness.world, new["record"])
    assert await check(harness) == {old["selector"]: "retiring", new["selector"]: "active"}
    harness.advance(REFRESH)
    data = await send_to_dmarc(harness, "After")
    assert signatures(data) == [new["selector"]]
    verdict = harness.world.received("dmarc.test")[-1].authentication
    assert verdict is not None and verdict.passed("dkimpy") and verdict.passed("mail-dkim")

    # The deferred message still carries the old key's signature: the old record stays.
    harness.advance(3 * REFRESH)
    assert (await check(harness))[old["selector"]] == "retiring"
    old_now = (await keys(harness))[old["selector"]]
    assert (old_now["state"], old_now["unfinished_deliveries"]) == ("retiring", 1)
    assert "keep" in old_now["advice"]

    harness.advance(RETRY)  # its retry is due: delivered, signed with the old key, which still verifies
    await harness.wait_state(waiting, "delivered")
    (late,) = harness.world.received("outlook.test")
    assert signatures(late.data) == [old["selector"]] and late.dkim == "pass"

    assert (await check(harness))[old["selector"]] == "retired"
    retired = (await keys(harness))[old["selector"]]
    assert retired["state"] == "retired" and retired["advice"].endswith("may be removed from DNS")
    events = await harness.client.get(
        "/v1/events", params={"type": ["domain.key_active", "domain.key_retired"]}
    )
    assert [(e["type"], e["data"]["selector"]) for e in events.json()["data"]] == [
        ("domain.key_active", new["selector"]),
        ("domain.key_retired", old["selector"]),
    ]
    assert events.json()["data"][1]["data"]["record"] == f"{old['selector']}._domainkey.acme.test"

    listed = CliRunner().invoke(
        app,
        ["domains", "keys", "acme.test", "--json"],
        env={"ESTAFETA_DATABASE_URL": core.settings.database_url},
    )
    assert listed.exit_code == 0, listed.output
    assert '"state": "retired"' in listed.output and "may be removed from DNS" in listed.output
    # The same keys the API lists, written the same way (times RFC 3339, null when not yet)
    assert {key["selector"]: key for key in json.loads(listed.output)} == await keys(harness)


async def test_dual_signing_passes_both_verifiers(harness: Harness, dmarc_reject: None) -> None:
    added = await harness.client.post("/v1/domains/acme.test/keys", json={"algorithm": "ed25519-sha256"})
    assert added.status_code == 201, added.text
    ed = added.json()
    assert ed["state"] == "pending" and ed["record"]["value"].startswith("v=DKIM1; k=ed25519; p=")
    publish(harness.world, ed["record"])
    await check(harness)
    states = {k["algorithm"]: k["state"] for k in (await keys(harness)).values()}
    assert states == {"rsa-sha256": "active", "ed25519-sha256": "active"}  # nothing replaced
    harness.advance(REFRESH)

    data = await send_to_dmarc(harness, "Twice signed")
    assert len(signatures(data)) == 2 and signatures(data)[0] == ed["selector"]  # Ed25519 on top
    verdict = harness.world.received("dmarc.test")[-1].authentication
    assert verdict is not None and verdict.dmarc == "pass"
    assert {(s.algorithm, s.result) for s in verdict.verdicts("dkimpy")} == {
        ("rsa-sha256", "pass"),
        ("ed25519-sha256", "pass"),
    }
    second = {s.algorithm: s.result for s in verdict.verdicts("mail-dkim")}
    assert second == {"rsa-sha256": "pass", "ed25519-sha256": "invalid"}  # Debian 12: no Ed25519
    stats = harness.world.stats()["dmarc.test"]
    assert (stats.mail_dkim_pass, stats.mail_dkim_fail, stats.mail_dkim_unsupported) == (1, 0, 1)


async def test_dmarc_test_refuses_unaligned_mail_and_accepts_aligned_mail(
    sandbox: Harness, dmarc_reject: None
) -> None:
    harness = sandbox
    await send_to_dmarc(harness, "Aligned")
    assert harness.world.stats()["dmarc.test"].dmarc_pass == 1

    # nokey.test was verified, then its DKIM record vanished from DNS: no DKIM pass at the receiver, and SPF
    # is the return path's (bounces.estafeta.test), not aligned with nokey.test.
    key = await add_verified_domain(harness.platform.core, harness.account_id, "nokey.test", "rsa-sha256")
    harness.world.zone.remove(key.record_name, "TXT")
    reject_policy(harness.world, "nokey.test")
    refused = await harness.send(**{"from": "hello@nokey.test"}, to=["ann@dmarc.test"], subject="Unaligned")
    view = await harness.wait_state(refused, "bounced")
    (recipient,) = view["recipients"]
    assert recipient["last_code"] == 550
    assert (
        "5.7.1 Unauthenticated mail from nokey.test is refused by its DMARC policy" in recipient["last_reply"]
    )
    stats = harness.world.stats()["dmarc.test"]
    assert (stats.accepted, stats.dmarc_fail, stats.mail_dkim_fail) == (1, 1, 1)


async def test_a_sandbox_platform_publishes_new_keys_and_withdraws_retired_ones(sandbox: Harness) -> None:
    world = sandbox.world
    (old,) = (await keys(sandbox)).values()
    rotated = await sandbox.client.post("/v1/domains/acme.test/keys/rotate")
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    # Published by RFC 2136 update to the world's DNS server: the check finds it there.
    assert world.zone.txt(new["record"]["name"]) == [new["record"]["value"]]
    assert await check(sandbox) == {old["selector"]: "retiring", new["selector"]: "active"}
    sandbox.advance(3 * REFRESH)  # nothing unfinished carries the old signature
    assert (await check(sandbox))[old["selector"]] == "retired"
    assert world.zone.txt(old["record"]["name"]) == []  # withdrawn
    assert signatures(await send_to_dmarc(sandbox, "Rotated")) == [new["selector"]]


async def test_the_command_line_rotates_adds_and_lists_keys(harness: Harness) -> None:
    env = {"ESTAFETA_DATABASE_URL": harness.platform.core.settings.database_url, "COLUMNS": "250"}
    runner = CliRunner()
    rotated = runner.invoke(app, ["domains", "rotate-key", "acme.test"], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert "under selector est" in rotated.output and "(pending)" in rotated.output
    assert "._domainkey.acme.test" in rotated.output and "v=DKIM1; k=rsa; p=" in rotated.output
    again = runner.invoke(app, ["domains", "rotate-key", "acme.test"], env=env)
    assert again.exit_code != 0 and "pending rsa-sha256 key" in again.output
    added = runner.invoke(app, ["domains", "add-key", "acme.test", "--algorithm", "ed25519-sha256"], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["domains", "keys", "acme.test"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("pending") == 2 and "active" in listed.output
