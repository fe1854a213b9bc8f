"""Plans and metered usage on a real database (SQLite and PostgreSQL): limits hold exactly under
concurrency, a refused batch counts nothing, days and months roll over, contacts and pools are limited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from estafeta import admin, plans
from estafeta.accept import Accepter, AcceptError
from estafeta.audience.consent import Consent, ConsentRecord
from estafeta.audience.links import Links
from estafeta.audience.lists import AudienceError, create_list
from estafeta.audience.tokens import Tokens
from estafeta.clock import ManualClock
from estafeta.config import Settings
from estafeta.store import plans as plan_store
from estafeta.store import queue as queue_store
from estafeta.store.db import Database

NOW = datetime(2026, 3, 31, 23, 59, tzinfo=UTC)


def _raw(index: int) -> bytes:
    return f"From: Shop <orders@shop.test>\r\nSubject: Order {index}\r\n\r\nThanks.\r\n".encode()


def _setup(db: Database) -> tuple[Settings, int]:
    settings = Settings(database_url=db.url, warmup={"tiers": []}, dkim_algorithm="ed25519-sha256")
    account = admin.create_account(db, "shop", NOW).id
    admin.add_domain(db, settings, account, "shop.test", NOW)
    return settings, account


def _plan(db: Database, account: int, **limits: int | None) -> None:
    values = {"messages_per_month": None, "messages_per_day": None, "contacts": None, **limits}
    db.call(plans.create_plan, "Starter", dedicated_pool=False, now=NOW, **values)
    db.call(plans.assign, account, "Starter", "test", NOW)


async def test_concurrent_senders_never_pass_the_daily_limit_and_refusals_name_the_plan(db: Database) -> None:
    settings, account = _setup(db)
    _plan(db, account, messages_per_day=10)
    clock = ManualClock(NOW)
    second = Database(db.url)  # two processes on one database
    accepters = [Accepter(database, settings, clock, lambda: None) for database in (db, second)]
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
    assert len(refused) == 7, outcomes
    assert all(o.status == 429 and o.smtp == "452 4.5.3" and o.kind == plans.PLAN_LIMIT for o in refused)
    assert "'Starter' allows 10 messages per day" in refused[0].reason
    assert db.call(queue_store.state_counts) == {"queued": 10}
    usage = db.call(plans.DatabaseMeter().usage, account, NOW)
    assert (usage.messages_today, usage.messages_this_month) == (10, 10)  # the refused counted nothing


async def test_usage_is_metered_per_utc_day_and_month_and_without_a_plan(db: Database) -> None:
    settings, account = _setup(db)
    clock = ManualClock(NOW)
    accepter = Accepter(db, settings, clock, lambda: None)
    await accepter.accept_raw(account, "orders@shop.test", ["a@gmail.test", "b@gmail.test"], _raw(1))
    clock.advance(120)  # past midnight: a new day and a new month
    await accepter.accept_raw(account, "orders@shop.test", ["c@gmail.test"], _raw(2))
    meter = plans.DatabaseMeter()
    before = db.call(meter.usage, account, NOW)
    after = db.call(meter.usage, account, clock.now())
    assert before.plan is None and (before.messages_today, before.messages_this_month) == (2, 2)
    assert (after.day, after.month) == (datetime(2026, 4, 1).date(), datetime(2026, 4, 1).date())
    assert (after.messages_today, after.messages_this_month) == (1, 1)


async def test_the_monthly_limit_refuses_what_would_pass_it(db: Database) -> None:
    settings, account = _setup(db)
    _plan(db, account, messages_per_month=3, messages_per_day=100)
    accepter = Accepter(db, settings, ManualClock(NOW), lambda: None)
    await accepter.accept_raw(account, "orders@shop.test", ["a@gmail.test", "b@gmail.test"], _raw(1))
    with pytest.raises(AcceptError) as refused:
        await accepter.accept_raw(account, "orders@shop.test", ["c@gmail.test", "d@gmail.test"], _raw(2))
    assert "3 messages per month; 2 used, these 2 would exceed it" in refused.value.reason
    await accepter.accept_raw(account, "orders@shop.test", ["c@gmail.test"], _raw(3))  # what fits goes
    assert db.call(queue_store.state_counts) == {"queued": 3}


async def test_contacts_over_the_plan_are_refused_and_none_of_the_batch_is_kept(db: Database) -> None:
    settings, account = _setup(db)
    _plan(db, account, contacts=3)
    clock = ManualClock(NOW)
    accepter = Accepter(db, settings, clock, lambda: None)
    links = Links(Tokens(b"k" * 32, clock), lambda: "https://example.com", settings.return_path_domain)
    consent = Consent(db, settings, clock, accepter, links)
    mailing_list = await create_list(db, account, "News", "News <news@shop.test>", False, NOW)
    record = ConsentRecord("checkout", None, True)
    await consent.subscribe(account, mailing_list, [("a@gmail.test", {}), ("b@gmail.test", {})], record)
    with pytest.raises(AudienceError) as refused:
        await consent.subscribe(account, mailing_list, [("c@gmail.test", {}), ("d@gmail.test", {})], record)
    assert refused.value.status == 429 and "allows 3 contacts" in refused.value.reason
    assert db.call(plan_store.count_contacts, account) == 2
    await consent.subscribe(account, mailing_list, [("a@gmail.test", {"vip": True})], record)  # known: fine


def test_a_dedicated_pool_needs_a_plan_that_includes_one(db: Database) -> None:
    _, account = _setup(db)
    db.call(plans.check_pool, account, "dedicated")  # on no plan: allowed
    _plan(db, account)
    with pytest.raises(plans.PlanError, match="shared pool"):
        db.call(plans.check_pool, account, "dedicated")
    db.call(plans.check_pool, account, "")  # the shared pool is always allowed


def test_plan_names_are_unique_and_unknown_plans_are_refused(db: Database) -> None:
    _, account = _setup(db)
    _plan(db, account)
    with pytest.raises(plans.PlanError, match="exists already"):
        db.call(
            plans.create_plan,
            " Starter ",
            messages_per_month=1,
            messages_per_day=None,
            contacts=None,
            dedicated_pool=False,
            now=NOW,
        )
    with pytest.raises(plans.PlanError, match="no plan 'Gold'"):
        db.call(plans.assign, account, "Gold", "test", NOW)
    db.call(plans.assign, account, None, "test", NOW)
    assert db.call(plan_store.plan_of, account) is None
