"""Group commit on a real PostgreSQL, where the batch transactions of several processes are written at once:
limits stay exact, every caller gets its own outcome, and a transaction the server aborts for a conflict is
written again."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, text

from estafeta.accept import AcceptError, GroupCommit
from estafeta.accept.commit import CONFLICT_TRIES, Rows
from estafeta.audit import SYSTEM, Actor
from estafeta.clock import ManualClock
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.plans import PLAN_LIMIT
from estafeta.store import driver
from estafeta.store import queue as queue_store
from estafeta.store.accounts import create_account
from estafeta.store.db import Database, DatabaseConflict
from estafeta.world import World
from tests.factories import add_sender, new_message, sandbox_dns

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
LIMIT = 10
RAISE_DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION 'staged' USING ERRCODE = 'deadlock_detected'; END $$"


class CountingDatabase(Database):
    """A database that notes how many transactions it ran at once at most."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._lock = threading.Lock()
        self._running = 0
        self.most = 0

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
        try:
            return super().call(fn, *args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1


@pytest.fixture
def pg_db(pg_url: str) -> Any:
    database = CountingDatabase(pg_url)
    database.migrate()
    yield database
    database.close()


async def _core(db: Database, world: World, limit: str) -> tuple[Core, int]:
    """A core whose sender may queue LIMIT recipients, by its plan or by its warm-up tier."""
    settings = Settings(
        database_url=db.url,
        warmup={"tiers": [LIMIT] if limit == "warm-up" else []},
        dkim_algorithm="ed25519-sha256",
        **sandbox_dns(world),
    )
    core = Core(settings, clock=ManualClock(NOW), db=db)
    account = (await add_sender(core, "shop", "shop.test")).account_id
    if limit == "plan":
        await core.plans.create("Starter", messages_per_day=LIMIT, actor=SYSTEM)
        await core.plans.assign(account, "Starter", Actor("test", "127.0.0.1"))
    return core, account


@pytest.mark.parametrize("limit", ["plan", "warm-up"])
async def test_concurrent_batch_transactions_store_exactly_the_limit_and_answer_each_caller(
    pg_db: CountingDatabase, dns_world: World, limit: str
) -> None:
    core, account = await _core(pg_db, dns_world, limit)
    stored: list[None] = []
    # Four group commits on one database stand for four front processes: each writes its own transactions.
    commits = [GroupCommit(pg_db, stored=lambda: stored.append(None)) for _ in range(4)]

    async def send(n: int) -> Rows:
        await asyncio.sleep(n * 0.0005)  # arrivals spread over several transactions
        row = new_message(f"msg_{n:026d}", account, [f"r{n}@gmail.test"])
        return await commits[n % 4].commit([row], NOW, gate=core.accepter.gate)

    outcomes = await asyncio.gather(*(send(n) for n in range(3 * LIMIT)), return_exceptions=True)
    assert pg_db.most >= 2  # batch transactions were written at once
    accepted = {n: o for n, o in enumerate(outcomes) if isinstance(o, list)}
    refused = [o for o in outcomes if not isinstance(o, list)]
    assert len(accepted) == LIMIT and len(refused) == 2 * LIMIT, outcomes
    assert all(isinstance(o, AcceptError) and o.smtp == "452 4.5.3" for o in refused), refused
    if limit == "plan":
        assert all(o.kind == PLAN_LIMIT for o in refused if isinstance(o, AcceptError))
    assert all([r.id for r in rows] == [f"msg_{n:026d}"] for n, rows in accepted.items())
    assert pg_db.call(queue_store.state_counts) == {"queued": LIMIT}
    usage = await core.plans.usage(account)
    assert usage.messages_today == LIMIT
    assert 1 <= len(stored) <= LIMIT  # once per transaction that stored messages


async def test_a_transaction_postgresql_aborts_for_a_conflict_is_written_again(
    pg_db: CountingDatabase, dns_world: World
) -> None:
    core, account = await _core(pg_db, dns_world, "none")
    tries: list[None] = []
    stored: list[None] = []

    def conflict_once(conn: Connection, rows: Rows) -> None:
        tries.append(None)
        if len(tries) == 1:
            conn.exec_driver_sql(RAISE_DEADLOCK)

    commits = GroupCommit(pg_db, stored=lambda: stored.append(None))
    rows = await commits.commit(
        [new_message("msg_1", account, ["a@gmail.test"])], NOW, gate=core.accepter.gate, hook=conflict_once
    )
    assert [r.id for r in rows] == ["msg_1"] and len(tries) == 2 and len(stored) == 1
    assert pg_db.call(queue_store.state_counts) == {"queued": 1}
    assert (await core.plans.usage(account)).messages_today == 1  # counted once


async def test_a_transaction_that_keeps_conflicting_is_answered_as_busy_and_stores_nothing(
    pg_db: CountingDatabase, dns_world: World
) -> None:
    core, account = await _core(pg_db, dns_world, "none")
    tries: list[None] = []

    def conflict(conn: Connection, rows: Rows) -> None:
        tries.append(None)
        conn.exec_driver_sql(RAISE_DEADLOCK)

    commits = GroupCommit(pg_db)
    entries = [[new_message(f"msg_{n}", account, [f"r{n}@gmail.test"])] for n in range(2)]
    outcomes = await asyncio.gather(
        *(commits.commit(rows, NOW, gate=core.accepter.gate, hook=conflict) for rows in entries),
        return_exceptions=True,
    )
    assert all(isinstance(o, DatabaseConflict) for o in outcomes), outcomes
    assert len(tries) == CONFLICT_TRIES  # their one batch, tried that often (its first hook aborts it)
    assert pg_db.call(queue_store.state_counts) == {}
    assert (await core.plans.usage(account)).messages_today == 0


@pytest.mark.parametrize("through", ["sqlalchemy", "driver"])
def test_two_transactions_locking_rows_in_opposite_orders_end_in_one_database_conflict(
    pg_db: CountingDatabase, through: str
) -> None:
    ids = [pg_db.call(create_account, f"shop{n}", NOW).id for n in range(2)]
    each_holds_one = threading.Barrier(2)

    def lock(conn: Connection, account_id: int) -> None:
        if through == "driver":  # statements on the DB-API cursor raise the driver's own errors
            with driver.cursor(conn) as cursor:
                cursor.execute("SELECT id FROM accounts WHERE id = %(id)s FOR UPDATE", {"id": account_id})
        else:
            conn.execute(text("SELECT id FROM accounts WHERE id = :id FOR UPDATE"), {"id": account_id})

    def both(conn: Connection, first: int, second: int) -> None:
        lock(conn, first)
        each_holds_one.wait(timeout=10)
        lock(conn, second)

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(pg_db.call, both, *ids), pool.submit(pg_db.call, both, *reversed(ids))]
        failures = [run.exception(timeout=30) for run in runs]
    assert sorted(type(f).__name__ for f in failures) == ["DatabaseConflict", "NoneType"], failures


async def test_a_writer_cancelled_before_it_ran_leaves_no_caller_waiting_for_good(
    pg_db: CountingDatabase, dns_world: World
) -> None:
    _, account = await _core(pg_db, dns_world, "none")
    commits = GroupCommit(pg_db)
    first = asyncio.create_task(commits.commit([new_message("msg_1", account, ["a@gmail.test"])], NOW))
    await asyncio.sleep(0)  # the caller is in, its writer created and not yet started
    assert commits._writer is not None
    commits._writer.cancel()  # as at shutdown: a coroutine cancelled before it starts runs no `finally`
    await asyncio.sleep(0)
    second = await asyncio.wait_for(
        commits.commit([new_message("msg_2", account, ["b@gmail.test"])], NOW), timeout=10
    )
    assert [r.id for r in second] == ["msg_2"]
    assert [r.id for r in await asyncio.wait_for(first, timeout=10)] == ["msg_1"]
