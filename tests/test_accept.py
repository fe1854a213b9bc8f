"""The accept path's gate on a real database (SQLite and PostgreSQL): warm-up limits hold exactly when many
requests arrive at once, even from two platform processes sharing the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from estafeta.accept import AcceptError
from estafeta.accept.accepter import INLINE_PREPARE_BYTES
from estafeta.clock import ManualClock
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.store import messages as message_store
from estafeta.store import queue as queue_store
from estafeta.store.db import Database
from estafeta.world import World
from tests.factories import add_sender, sandbox_dns

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
LIMIT = 10


def _raw(index: int) -> bytes:
    return (
        f"From: Shop <orders@shop.test>\r\nTo: a{index}@gmail.test, b{index}@gmail.test\r\n"
        f"Subject: Order {index}\r\n\r\nThanks.\r\n"
    ).encode()


async def test_concurrent_requests_never_overshoot_the_warm_up_limit(db: Database, dns_world: World) -> None:
    settings = Settings(
        database_url=db.url,
        warmup={"tiers": [LIMIT]},
        dkim_algorithm="ed25519-sha256",
        **sandbox_dns(dns_world),
    )
    clock = ManualClock(NOW)
    # Two cores on one database stand for two platform processes: each groups its own commits.
    second = Database(db.url)
    cores = [Core(settings, clock=clock, db=database) for database in (db, second)]
    account = (await add_sender(cores[0], "shop", "shop.test")).account_id
    accepters = [core.accepter for core in cores]
    try:
        outcomes = await asyncio.gather(
            *(
                accepters[i % 2].accept_raw(
                    account, "orders@shop.test", [f"a{i}@gmail.test", f"b{i}@gmail.test"], _raw(i)
                )
                for i in range(12)
            ),
            return_exceptions=True,
        )
    finally:
        second.close()
    refused = [o for o in outcomes if isinstance(o, AcceptError)]
    assert len(refused) == 12 - LIMIT // 2, outcomes
    assert all(o.status == 429 and o.smtp.startswith("452 4.5.3") for o in refused)
    assert db.call(queue_store.state_counts) == {"queued": LIMIT}


async def test_a_relayed_message_too_large_to_sign_on_the_loop_is_signed_and_stored_as_a_small_one(
    db: Database, dns_world: World
) -> None:
    settings = Settings(database_url=db.url, warmup={"tiers": []}, **sandbox_dns(dns_world))
    core = Core(settings, clock=ManualClock(NOW), db=db)
    account = (await add_sender(core, "shop", "shop.test")).account_id
    small = _raw(1)
    large = small + b"More about your order.\r\n" * (INLINE_PREPARE_BYTES // 24 + 1)
    assert len(small) <= INLINE_PREPARE_BYTES < len(large)
    for raw in (small, large):
        accepted = await core.accepter.accept_raw(account, "orders@shop.test", ["a@gmail.test"], raw)
        stored = db.call(message_store.get_raw, account, accepted.id)
        assert stored is not None and stored.startswith(b"DKIM-Signature: ")
        assert stored.endswith(raw[raw.index(b"\r\n\r\n") :])
