"""Faulty receivers (time-outs after DATA, resets mid-DATA, broken TLS, 421 storms, a slow-loris MX) next
to healthy ones: healthy mail keeps flowing, faulty destinations are deferred and retried, and nothing is
lost or recorded as delivered that a receiver did not acknowledge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from estafeta.store import queue as queue_store
from estafeta.world import World
from tests.e2e.audience_support import eventually
from tests.e2e.harness import Harness, start_harness

FAULTY = ("hang.test", "reset.test", "storm.test", "slow.test")
HEALTHY = ("yahoo.test", "outlook.test")


async def _send(h: Harness, recipients: list[str]) -> dict[str, str]:
    """One message per recipient, in one request; returns recipient -> message id."""
    messages = [{"from": "a@acme.test", "to": [r], "subject": r, "text": "hi\n"} for r in recipients]
    response = await h.client.post("/v1/messages", json={"messages": messages})
    assert response.status_code == 202, response.text
    return {r: m["id"] for r, m in zip(recipients, response.json()["messages"], strict=True)}


async def _recipient(h: Harness, message_id: str) -> dict[str, Any]:
    (recipient,) = (await h.message(message_id))["recipients"]
    return dict(recipient)


async def _all_in(h: Harness, ids: dict[str, str], *states: str) -> bool:
    for message_id in ids.values():
        if (await _recipient(h, message_id))["state"] not in states:
            return False
    return True


async def test_healthy_mail_flows_while_slow_and_hanging_receivers_hold_their_senders(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'e2e.db'}",
        # Receivers get a minute per reply, and the engine fewer slots than the stuck mail.
        delivery={
            "connect_timeout": 60,
            "command_timeout": 60,
            "max_in_flight": 40,
            "batch_size": 10,
            "max_in_flight_per_domain": 10,
        },
    )
    try:
        # Queued first, so first in line for the engine's 40 slots.
        stuck = await _send(h, [f"s{i}@{d}" for d in ("hang.test", "slow.test") for i in range(30)])
        healthy = await _send(h, [f"h{i}@{HEALTHY[i % 2]}" for i in range(20)])
        await eventually(lambda: _all_in(h, healthy, "delivered"), "healthy mail delivered")
        # Meanwhile the stuck destinations had their senders waiting on replies, and no more than their
        # share of the slots: the rest of their mail still waits in the queue.
        assert await _all_in(h, stuck, "queued")
        held = h.platform.engine.held
        assert 0 < held["hang.test"] <= 20 and 0 < held["slow.test"] <= 20
        acknowledged = h.world.ledger().copies()
        assert all(r in acknowledged for r in healthy) and not any(r in acknowledged for r in stuck)
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=1)


async def test_faulty_receivers_are_deferred_then_retried_and_nothing_is_lost_or_wrongly_delivered(
    fresh_world: World, tmp_path: Path
) -> None:
    h = await start_harness(
        fresh_world,
        f"sqlite:///{tmp_path / 'e2e.db'}",
        delivery={
            "connect_timeout": 1,
            "command_timeout": 1,
            "max_dropped_transactions": 2,
            # One connection at a time to hang.test: its mail waits in line behind each time-out.
            "domain_limits": {"hang.test": {"concurrency": 1}},
        },
    )
    try:
        faulty = await _send(h, [f"f{i}@{d}" for d in FAULTY for i in range(6)])
        plaintext = await _send(h, [f"p{i}@badtls.test" for i in range(3)])
        healthy = await _send(h, [f"h{i}@{HEALTHY[i % 2]}" for i in range(10)])
        await eventually(lambda: _all_in(h, {**healthy, **plaintext}, "delivered"), "healthy mail delivered")
        await eventually(lambda: _all_in(h, faulty, "deferred"), "faulty destinations deferred", 60)

        # Deferred with what went wrong; no receiver acknowledged any of them.
        seen = {r: await _recipient(h, m) for r, m in faulty.items()}
        for recipient, view in seen.items():
            domain, reply = recipient.partition("@")[2], view["last_reply"]
            if domain == "storm.test":
                assert view["last_code"] == 421 and reply.startswith("4.7.0 "), view
            elif domain == "slow.test":
                assert "timed out" in reply, view  # its greeting never arrived in time
            elif domain == "reset.test":
                assert "lost" in reply, view
        # After two time-outs in a row, the rest of hang.test's line was deferred without waiting for
        # a time-out each (and without counting an attempt).
        hang = [seen[r] for r in faulty if r.endswith("@hang.test")]
        timed_out = [v for v in hang if "lost: Timed out" in v["last_reply"].partition("(")[0]]
        not_tried = [v for v in hang if v["last_reply"].startswith("not tried: hang.test ended 2 ")]
        assert (len(timed_out), len(not_tried)) == (2, 4), hang
        assert {v["attempts"] for v in timed_out} == {1} and {v["attempts"] for v in not_tried} == {0}
        acknowledged = h.world.ledger().copies()
        assert not any(r in acknowledged for r in faulty)
        # A broken TLS handshake did not stop the mail: it went again in plaintext.
        assert {m.tls for m in h.world.received("badtls.test")} == {False}

        # Healed and due again, each faulty message arrives exactly once.
        for domain in FAULTY:
            h.world.heal(domain)
        h.advance(3600)
        await eventually(lambda: _all_in(h, faulty, "delivered"), "retried mail delivered")
        copies = h.world.ledger().copies()
        assert {r: len(copies[r]) for r in [*faulty, *healthy, *plaintext]} == dict.fromkeys(
            [*faulty, *healthy, *plaintext], 1
        )
        assert await h.platform.core.db.run(queue_store.state_counts) == {"delivered": 37}
    finally:
        await h.client.aclose()
        await h.platform.stop(grace=1)
