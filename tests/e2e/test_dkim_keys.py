"""DKIM key rotation and dual signing end to end, verified by dmarc.test's two independent verifiers."""

from __future__ import annotations

import email
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

REFRESH = SIGNER_REFRESH.total_seconds() + 1
RETRY = 3600  # a deferred message waits longer than the rotation steps below take on the manual clock


@pytest.fixture
async def harness(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await start_harness(
        fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}", delivery={"retry_schedule": [RETRY]}
    )
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


@pytest.fixture
def dmarc_reject(fresh_world: World) -> Iterator[None]:
    """acme.test and nokey.test publish DMARC p=reject (removed afterwards: the world outlives the test)."""
    for domain in ("acme.test", "nokey.test"):
        fresh_world.zone.add(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=reject")
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
    assert await core.dkim_keys.check() == {"activated": 0, "retired": 0}
    harness.advance(REFRESH)
    assert signatures(await send_to_dmarc(harness, "Before")) == [old["selector"]]

    publish(harness.world, new["record"])
    assert await core.dkim_keys.check() == {"activated": 1, "retired": 0}
    states = {s: k["state"] for s, k in (await keys(harness)).items()}
    assert states == {old["selector"]: "retiring", new["selector"]: "active"}
    harness.advance(REFRESH)
    data = await send_to_dmarc(harness, "After")
    assert signatures(data) == [new["selector"]]
    verdict = harness.world.received("dmarc.test")[-1].authentication
    assert verdict is not None and verdict.passed("dkimpy") and verdict.passed("mail-dkim")

    # The deferred message still carries the old key's signature: the old record stays.
    harness.advance(3 * REFRESH)
    assert await core.dkim_keys.check() == {"activated": 0, "retired": 0}
    old_now = (await keys(harness))[old["selector"]]
    assert (old_now["state"], old_now["unfinished_deliveries"]) == ("retiring", 1)
    assert "keep" in old_now["advice"]

    harness.advance(RETRY)  # its retry is due: delivered, signed with the old key, which still verifies
    await harness.wait_state(waiting, "delivered")
    (late,) = harness.world.received("outlook.test")
    assert signatures(late.data) == [old["selector"]] and late.dkim == "pass"

    assert await core.dkim_keys.check() == {"activated": 0, "retired": 1}
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


async def test_dual_signing_passes_both_verifiers(harness: Harness, dmarc_reject: None) -> None:
    added = await harness.client.post("/v1/domains/acme.test/keys", json={"algorithm": "ed25519-sha256"})
    assert added.status_code == 201, added.text
    ed = added.json()
    assert ed["state"] == "pending" and ed["record"]["value"].startswith("v=DKIM1; k=ed25519; p=")
    publish(harness.world, ed["record"])
    assert await harness.platform.core.dkim_keys.check() == {"activated": 1, "retired": 0}
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
    harness: Harness, dmarc_reject: None
) -> None:
    await send_to_dmarc(harness, "Aligned")
    assert harness.world.stats()["dmarc.test"].dmarc_pass == 1

    # nokey.test was verified, then its key left DNS: its mail still goes out until a check notices (and
    # for the grace period after), with no DKIM pass, and SPF is the return path's (bounces.estafeta.test),
    # not aligned with nokey.test.
    _, key = await harness.platform.core.domains.add(harness.account_id, "nokey.test", "rsa-sha256")
    harness.world.zone.remove(key.record_name, "TXT")
    harness.world.zone.remove("_dmarc.nokey.test", "TXT")  # registering published p=none: back to p=reject
    harness.world.zone.add("_dmarc.nokey.test", "TXT", "v=DMARC1; p=reject")
    refused = await harness.send(**{"from": "hello@nokey.test"}, to=["ann@dmarc.test"], subject="Unaligned")
    view = await harness.wait_state(refused, "bounced")
    (recipient,) = view["recipients"]
    assert recipient["last_code"] == 550
    assert (
        "5.7.1 Unauthenticated mail from nokey.test is refused by its DMARC policy" in recipient["last_reply"]
    )
    stats = harness.world.stats()["dmarc.test"]
    assert (stats.accepted, stats.dmarc_fail, stats.mail_dkim_fail) == (1, 1, 1)
