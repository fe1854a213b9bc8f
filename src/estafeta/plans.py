"""Plans: volume limits an operator puts an account on, and the meter that counts what it sends.

A plan limits messages per calendar month and per UTC day, contacts, and whether the account's streams
may use a dedicated IP pool; a missing limit is no limit, and an account on no plan is unlimited. A
"message" here is one recipient of one message, as queued: the unit receivers and invoices count.

Usage is metered by `DatabaseMeter` inside the transaction that stores the messages (the accept gate),
so the counters are exact and a refused batch counts nothing. The meter is the `Meter` protocol, so that
cluster-wide counters can stand in front of it later; the database stays the source of truth.
Over a limit the HTTP API answers 429 (`/problems/plan-limit`) and the SMTP relay `452 4.5.3`, both
naming the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol, TypeVar

from sqlalchemy import Connection

from estafeta.audit import Actor, record
from estafeta.clock import Clock
from estafeta.store import plans as store
from estafeta.store.db import Database

PLAN_LIMIT = "plan-limit"
T = TypeVar("T")


class PlanError(ValueError):
    """A plan request that cannot be carried out (unknown plan, name taken, bad limit)."""


class OverPlan(Exception):
    """Sending or adding contacts would pass a limit of the account's plan; the message says which."""

    def __init__(self, plan: str, what: str, limit: int, used: int, wanted: int) -> None:
        super().__init__(
            f"the account's plan {plan!r} allows {limit} {what}; {used} used, these {wanted} would exceed "
            "it. Ask the platform's operators for a bigger plan"
        )
        self.plan = plan
        self.what = what
        self.limit = limit
        self.used = used


@dataclass(frozen=True)
class Usage:
    """An account's plan (None: unlimited) and what it has used in the current day and month."""

    plan: store.PlanRow | None
    day: date
    month: date
    messages_today: int
    messages_this_month: int
    contacts: int

    def share(self, used: int, limit: int | None) -> float | None:
        return None if not limit else used / limit


def periods(now: datetime) -> list[tuple[str, date]]:
    """The counters a message queued now is metered in: its UTC day, then its calendar month."""
    today = now.date()
    return [("day", today), ("month", today.replace(day=1))]


@dataclass
class Tab:
    """What one storing transaction charges an account: checked against its plan message by message, and
    written to the counters once, when the transaction's messages are all admitted (`Meter.settle`)."""

    account_id: int
    plan: store.PlanRow | None
    used: dict[tuple[str, date], int] = field(default_factory=dict)  # locked counters (limited plans)
    added: dict[tuple[str, date], int] = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        return self.plan is not None and (
            self.plan.messages_per_day is not None or self.plan.messages_per_month is not None
        )


class Meter(Protocol):
    """Counts what accounts send against their plans, inside the storing transaction."""

    def open_tab(self, account_id: int, plan: store.PlanRow | None) -> Tab:
        """The account's tab for this transaction, on the plan the transaction read."""
        ...

    def charge(self, conn: Connection, tab: Tab, amount: int, now: datetime) -> None:
        """Count `amount` messages on the tab, or raise `OverPlan` and count nothing."""
        ...

    def settle(self, conn: Connection, tab: Tab) -> None:
        """Write what the tab counted to the account's counters."""
        ...

    def usage(self, conn: Connection, account_id: int, now: datetime) -> Usage: ...


class DatabaseMeter:
    """Usage counters in the database: exact on one node and across nodes sharing one database."""

    def open_tab(self, account_id: int, plan: store.PlanRow | None) -> Tab:
        return Tab(account_id, plan)

    def charge(self, conn: Connection, tab: Tab, amount: int, now: datetime) -> None:
        if amount <= 0:
            return
        spans = periods(now)
        if tab.limited:
            assert tab.plan is not None
            unread = [span for span in spans if span not in tab.used]
            if unread:  # locked until the transaction ends (PostgreSQL): other nodes meter after it
                locked = store.lock_counters(conn, tab.account_id, unread)
                tab.used.update((span, locked[span[0]]) for span in unread)
            for span, limit, what in (
                (spans[0], tab.plan.messages_per_day, "messages per day"),
                (spans[1], tab.plan.messages_per_month, "messages per month"),
            ):
                used = tab.used[span] + tab.added.get(span, 0)
                if limit is not None and used + amount > limit:
                    raise OverPlan(tab.plan.name, what, limit, used, amount)
        for span in spans:
            tab.added[span] = tab.added.get(span, 0) + amount

    def settle(self, conn: Connection, tab: Tab) -> None:
        if tab.limited:
            for span, amount in tab.added.items():
                store.add_usage(conn, tab.account_id, [span], amount)
        else:  # nothing was checked: no read, no lock, one upsert (concurrent additions commute)
            store.count_usage(conn, tab.account_id, tab.added)
        tab.added.clear()

    def usage(self, conn: Connection, account_id: int, now: datetime) -> Usage:
        spans = periods(now)
        counted = store.read_usage(conn, account_id, spans)
        return Usage(
            store.plan_of(conn, account_id),
            spans[0][1],
            spans[1][1],
            counted["day"],
            counted["month"],
            store.count_contacts(conn, account_id),
        )


def within_contacts(conn: Connection, account_id: int, add: Callable[[], T]) -> T:
    """Run `add`, which stores contacts in this transaction, and raise `OverPlan` (so the caller's
    transaction stores none of them) if the account now has more than its plan allows."""
    plan = store.plan_of(conn, account_id)
    if plan is None or plan.contacts is None:
        return add()
    before = store.count_contacts(conn, account_id)
    result = add()
    total = store.count_contacts(conn, account_id)
    if total > before and total > plan.contacts:
        raise OverPlan(plan.name, "contacts", plan.contacts, before, total - before)
    return result


def check_pool(conn: Connection, account_id: int, ip_pool: str) -> None:
    """A stream may use a dedicated IP pool only on a plan that includes one (or on no plan)."""
    if not ip_pool:
        return
    plan = store.plan_of(conn, account_id)
    if plan is not None and not plan.dedicated_pool:
        raise PlanError(
            f"the account's plan {plan.name!r} sends from the shared pool; a dedicated pool needs "
            "a plan that includes one"
        )


def _limit(value: int | None, name: str) -> int | None:
    if value is not None and value < 0:
        raise PlanError(f"{name} must be 0 or more (or left out for no limit)")
    return value


def create_plan(
    conn: Connection,
    name: str,
    *,
    messages_per_month: int | None,
    messages_per_day: int | None,
    contacts: int | None,
    dedicated_pool: bool,
    now: datetime,
    actor: Actor,
) -> store.PlanRow:
    name = " ".join(name.split())
    if not name:
        raise PlanError("a plan needs a name")
    if store.find_plan(conn, name) is not None:
        raise PlanError(f"a plan named {name!r} exists already")
    limits = {
        "messages_per_month": _limit(messages_per_month, "messages per month"),
        "messages_per_day": _limit(messages_per_day, "messages per day"),
        "contacts": _limit(contacts, "contacts"),
    }
    details = {**limits, "dedicated_pool": dedicated_pool}
    record(conn, actor, "plan.create", at=now, target=name, details=details)
    return store.create_plan(
        conn,
        name,
        limits["messages_per_month"],
        limits["messages_per_day"],
        limits["contacts"],
        dedicated_pool,
        now,
    )


def assign(conn: Connection, account_id: int, plan_name: str | None, actor: Actor, now: datetime) -> None:
    """Put an account on the named plan, or on none (`plan_name` None or empty)."""
    plan = None
    if plan_name:
        plan = store.find_plan(conn, plan_name)
        if plan is None:
            known = ", ".join(p.name for p in store.list_plans(conn)) or "none yet"
            raise PlanError(f"no plan {plan_name!r} (plans: {known})")
    store.assign(conn, account_id, plan.id if plan else None, actor.name, now)
    plan_text = plan.name if plan else None
    record(
        conn,
        actor,
        "plan.assign",
        at=now,
        account_id=account_id,
        target=plan_text or "",
        details={"plan": plan_text},
    )


class Plans:
    """The plans service: plans, who is on which, and what accounts used (read through the meter)."""

    def __init__(self, db: Database, clock: Clock, meter: Meter) -> None:
        self.db = db
        self.clock = clock
        self.meter = meter

    async def create(
        self,
        name: str,
        *,
        messages_per_month: int | None = None,
        messages_per_day: int | None = None,
        contacts: int | None = None,
        dedicated_pool: bool = False,
        actor: Actor,
    ) -> store.PlanRow:
        return await self.db.run(
            create_plan,
            name,
            messages_per_month=messages_per_month,
            messages_per_day=messages_per_day,
            contacts=contacts,
            dedicated_pool=dedicated_pool,
            now=self.clock.now(),
            actor=actor,
        )

    async def list(self) -> list[store.PlanRow]:
        return await self.db.run(store.list_plans)

    async def assign(self, account_id: int, plan_name: str | None, actor: Actor) -> None:
        await self.db.run(assign, account_id, plan_name, actor, self.clock.now())

    async def assignments(self) -> list[store.Assignment]:
        """Every account with its plan (or none)."""
        return await self.db.run(store.assignments)

    async def usage(self, account_id: int) -> Usage:
        return await self.db.run(self.meter.usage, account_id, self.clock.now())
