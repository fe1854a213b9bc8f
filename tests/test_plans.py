"""Plans and metered usage on a real database (SQLite and PostgreSQL): limits hold exactly under
concurrency, a refused batch counts nothing, days and months roll over, contacts and pools are limited."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest

from estafeta.accept import AcceptError, GroupCommit
from estafeta.audience.consent import ConsentRecord
from estafeta.audience.lists import AudienceError
from estafeta.audit import SYSTEM, Actor
from estafeta.clock import ManualClock
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.plans import PLAN_LIMIT, PlanError
from estafeta.store import queue as queue_store
from estafeta.store.db import Database
from estafeta.streams import StreamError
from estafeta.world import World
from tests.factories import add_sender, new_message, sandbox_dns

NOW = datetime(2026, 3, 31, 23, 59, tzinfo=UTC)


def _raw(index: int) -> bytes:
    return f"From: Shop <orders@shop.test>\r\nSubject: Order {index}\r\n\r\nThanks.\r\n".encode()


def _core(db: Database, clock: ManualClock, world: World, **overrides: object) -> Core:
    settings = Settings(
        database_url=db.url,
        warmup={"tiers": []},
        dkim_algorithm="ed25519-sha256",
        **sandbox_dns(world),
        **overrides,
    )
    return Core(settings, clock=clock, db=db)


async def _shop(core: Core, **limits: int | None) -> int:
    account = (await add_sender(core, "shop", "shop.test")).account_id
    if limits:
        await core.plans.create("Starter", **limits, actor=SYSTEM)
        await core.plans.assign(account, "Starter", Actor("test", "127.0.0.1"))
    return account


async def test_concurrent_senders_never_pass_the_daily_limit_and_refusals_name_the_plan(
    db: Database, dns_world: World
) -> None:
    clock = ManualClock(NOW)
    second = Database(db.url)  # two processes on one database
    cores = [_core(db, clock, dns_world), _core(second, clock, dns_world)]
    account = await _shop(cores[0], messages_per_day=10)
    try:
        outcomes = await asyncio.gather(
            *(
                cores[i % 2].accepter.accept_raw(
                    account, "orders@shop.test", [f"a{i}@gmail.test", f"b{i}@gmail.test"], _raw(i)
                )
                for i in range(12)
            ),
            return_exceptions=True,
        )
    finally:
        second.close()
    refused = [o for o in outcomes if isinstance(o, AcceptError)]
    assert len(refused) == 7, outcomes
    assert all(o.status == 429 and o.smtp == "452 4.5.3" and o.kind == PLAN_LIMIT for o in refused)
    assert "'Starter' allows 10 messages per day" in refused[0].reason
    assert db.call(queue_store.state_counts) == {"queued": 10}
    usage = await cores[0].plans.usage(account)
    assert (usage.messages_today, usage.messages_this_month) == (10, 10)  # the refused counted nothing


async def test_usage_is_metered_per_utc_day_and_month_and_without_a_plan(
    db: Database, dns_world: World
) -> None:
    clock = ManualClock(NOW)
    core = _core(db, clock, dns_world)
    account = await _shop(core)
    await core.accepter.accept_raw(account, "orders@shop.test", ["a@gmail.test", "b@gmail.test"], _raw(1))
    before = await core.plans.usage(account)
    clock.advance(120)  # past midnight: a new day and a new month
    await core.accepter.accept_raw(account, "orders@shop.test", ["c@gmail.test"], _raw(2))
    after = await core.plans.usage(account)
    assert before.plan is None and (before.messages_today, before.messages_this_month) == (2, 2)
    assert (after.day, after.month) == (date(2026, 4, 1), date(2026, 4, 1))
    assert (after.messages_today, after.messages_this_month) == (1, 1)


async def test_the_monthly_limit_refuses_what_would_pass_it(db: Database, dns_world: World) -> None:
    core = _core(db, ManualClock(NOW), dns_world)
    account = await _shop(core, messages_per_month=3, messages_per_day=100)
    await core.accepter.accept_raw(account, "orders@shop.test", ["a@gmail.test", "b@gmail.test"], _raw(1))
    with pytest.raises(AcceptError) as refused:
        await core.accepter.accept_raw(account, "orders@shop.test", ["c@gmail.test", "d@gmail.test"], _raw(2))
    assert "3 messages per month; 2 used, these 2 would exceed it" in refused.value.reason
    await core.accepter.accept_raw(account, "orders@shop.test", ["c@gmail.test"], _raw(3))  # what fits goes
    assert db.call(queue_store.state_counts) == {"queued": 3}


async def test_contacts_over_the_plan_are_refused_and_none_of_the_batch_is_kept(
    db: Database, dns_world: World
) -> None:
    core = _core(db, ManualClock(NOW), dns_world)
    account = await _shop(core, contacts=3)
    mailing_list = await core.audience.create_list(account, "News", "News <news@shop.test>", False)
    record = ConsentRecord("checkout", None, True)
    consent = core.audience.consent
    await consent.subscribe(account, mailing_list, [("a@gmail.test", {}), ("b@gmail.test", {})], record)
    with pytest.raises(AudienceError) as refused:
        await consent.subscribe(account, mailing_list, [("c@gmail.test", {}), ("d@gmail.test", {})], record)
    assert refused.value.status == 429 and "allows 3 contacts" in refused.value.reason
    assert (await core.plans.usage(account)).contacts == 2
    await consent.subscribe(account, mailing_list, [("a@gmail.test", {"vip": True})], record)  # known: fine


async def test_a_dedicated_pool_needs_a_plan_that_includes_one(db: Database, dns_world: World) -> None:
    core = _core(db, ManualClock(NOW), dns_world, ip_pools={"dedicated": ["127.0.0.2"]})
    account = await _shop(core)
    await core.streams.put(account, "broadcast", "", "dedicated", actor=SYSTEM)  # on no plan: allowed
    await core.plans.create("Shared", messages_per_day=1000, actor=SYSTEM)
    await core.plans.assign(account, "Shared", Actor("test", "127.0.0.1"))
    with pytest.raises(StreamError) as refused:
        await core.streams.put(account, "broadcast", "", "dedicated", actor=SYSTEM)
    assert refused.value.status == 403 and "shared pool" in refused.value.detail
    await core.streams.put(account, "broadcast", "", "", actor=SYSTEM)  # the shared pool is always allowed
    await core.plans.create("Dedicated", dedicated_pool=True, actor=SYSTEM)
    await core.plans.assign(account, "Dedicated", Actor("test", "127.0.0.1"))
    await core.streams.put(account, "broadcast", "", "dedicated", actor=SYSTEM)


async def test_plan_names_are_unique_and_unknown_plans_are_refused(db: Database, dns_world: World) -> None:
    core = _core(db, ManualClock(NOW), dns_world)
    account = await _shop(core, messages_per_month=1)
    with pytest.raises(PlanError, match="exists already"):
        await core.plans.create(" Starter ", actor=SYSTEM)
    with pytest.raises(PlanError, match="no plan 'Gold'"):
        await core.plans.assign(account, "Gold", Actor("test", "127.0.0.1"))
    await core.plans.assign(account, None, Actor("test", "127.0.0.1"))
    assert (await core.plans.usage(account)).plan is None
    assert [(a.account_name, a.plan) for a in await core.plans.assignments()] == [("shop", None)]


async def test_concurrent_senders_without_a_limit_are_all_counted(db: Database, dns_world: World) -> None:
    core = _core(db, ManualClock(NOW), dns_world)
    account = await _shop(core)
    await asyncio.gather(
        *(
            core.accepter.accept_raw(account, "orders@shop.test", [f"r{n}@gmail.test"], _raw(n))
            for n in range(12)
        )
    )
    usage = await core.plans.usage(account)
    assert usage.plan is None and (usage.messages_today, usage.messages_this_month) == (12, 12)


async def test_callers_in_one_transaction_are_judged_in_turn_each_with_its_own_suppressed_recipients(
    db: Database, dns_world: World
) -> None:
    """The gate reads the account once for the whole transaction, yet judges each caller as if alone,
    in the order they came: what one caller may not send leaves the room to the next."""
    core = _core(db, ManualClock(NOW), dns_world)
    account = await _shop(core, messages_per_day=3)
    await core.suppressions.add(account, "b@gmail.test", actor=SYSTEM)
    commits = GroupCommit(core.db)
    entries = [
        ["a@gmail.test", "b@gmail.test"],
        ["c@gmail.test", "d@gmail.test", "e@gmail.test"],
        ["f@gmail.test"],
    ]
    outcomes = await asyncio.gather(
        *(
            commits.commit([new_message(f"msg_{n:026d}", account, recipients)], NOW, gate=core.accepter.gate)
            for n, recipients in enumerate(entries)
        ),
        return_exceptions=True,
    )
    first, refused, last = outcomes
    assert isinstance(refused, AcceptError) and refused.kind == PLAN_LIMIT
    assert "1 used, these 3 would exceed it" in refused.reason
    assert isinstance(first, list) and isinstance(last, list)
    assert first[0].recipients == ["a@gmail.test"]
    assert [s.recipient for s in first[0].suppressed] == ["b@gmail.test"]
    assert (last[0].recipients, last[0].suppressed) == (["f@gmail.test"], [])
    assert db.call(queue_store.state_counts) == {"queued": 2, "suppressed": 1}
    usage = await core.plans.usage(account)
    assert (usage.messages_today, usage.messages_this_month) == (2, 2)
