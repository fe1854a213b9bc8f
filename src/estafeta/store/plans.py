"""Plans, the plan each account is on, and the usage counters that meter sending per day and month."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, Date, TextClause, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from estafeta.store.driver import sqlite_many
from estafeta.store.models import Account, AccountPlan, Contact, Plan, UsageCounter


@dataclass(frozen=True)
class PlanRow:
    id: int
    name: str
    messages_per_month: int | None
    messages_per_day: int | None
    contacts: int | None
    dedicated_pool: bool
    created_at: datetime


@dataclass(frozen=True)
class Assignment:
    account_id: int
    account_name: str
    plan: PlanRow | None
    assigned_by: str | None
    assigned_at: datetime | None


def plan_row(row: object) -> PlanRow:
    """A plan from a row with the `plans` table's column names."""
    return PlanRow(
        row.id,  # type: ignore[attr-defined]
        row.name,  # type: ignore[attr-defined]
        row.messages_per_month,  # type: ignore[attr-defined]
        row.messages_per_day,  # type: ignore[attr-defined]
        row.contacts,  # type: ignore[attr-defined]
        row.dedicated_pool,  # type: ignore[attr-defined]
        row.created_at,  # type: ignore[attr-defined]
    )


def create_plan(
    conn: Connection,
    name: str,
    messages_per_month: int | None,
    messages_per_day: int | None,
    contacts: int | None,
    dedicated_pool: bool,
    now: datetime,
) -> PlanRow:
    new_id = conn.execute(
        insert(Plan)
        .values(
            name=name,
            messages_per_month=messages_per_month,
            messages_per_day=messages_per_day,
            contacts=contacts,
            dedicated_pool=dedicated_pool,
            created_at=now,
        )
        .returning(Plan.id)
    ).scalar_one()
    return PlanRow(new_id, name, messages_per_month, messages_per_day, contacts, dedicated_pool, now)


def find_plan(conn: Connection, name: str) -> PlanRow | None:
    row = conn.execute(select(Plan).where(Plan.name == name)).first()
    return plan_row(row) if row else None


def get_plan(conn: Connection, plan_id: int) -> PlanRow | None:
    row = conn.execute(select(Plan).where(Plan.id == plan_id)).first()
    return plan_row(row) if row else None


def list_plans(conn: Connection) -> list[PlanRow]:
    return [plan_row(r) for r in conn.execute(select(Plan).order_by(Plan.id)).all()]


# Read for every accepted batch: built once (building a statement costs more than running it).
_PLAN_OF = (
    select(Plan)
    .join(AccountPlan, AccountPlan.plan_id == Plan.id)
    .where(AccountPlan.account_id == bindparam("account_id"))
)


def plan_of(conn: Connection, account_id: int) -> PlanRow | None:
    row = conn.execute(_PLAN_OF, {"account_id": account_id}).first()
    return plan_row(row) if row else None


def assign(conn: Connection, account_id: int, plan_id: int | None, actor: str, now: datetime) -> None:
    """Put the account on a plan (None: on no plan)."""
    conn.execute(delete(AccountPlan).where(AccountPlan.account_id == account_id))
    if plan_id is not None:
        conn.execute(
            insert(AccountPlan).values(
                account_id=account_id, plan_id=plan_id, assigned_by=actor, assigned_at=now
            )
        )


def assignments(conn: Connection) -> list[Assignment]:
    """Every account with its plan (or none), in account order."""
    rows = conn.execute(
        select(
            Account.id, Account.name, AccountPlan.assigned_by, AccountPlan.assigned_at, AccountPlan.plan_id
        )
        .outerjoin(AccountPlan, AccountPlan.account_id == Account.id)
        .order_by(Account.id)
    ).all()
    plans = {p.id: p for p in list_plans(conn)}
    return [
        Assignment(r.id, r.name, plans.get(r.plan_id) if r.plan_id else None, r.assigned_by, r.assigned_at)
        for r in rows
    ]


# -- usage counters --------------------------------------------------------------------------------


def _ensure(conn: Connection, account_id: int, periods: list[tuple[str, date]]) -> None:
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for period, start in periods:
        conn.execute(
            dialect_insert(UsageCounter)
            .values(account_id=account_id, period=period, start=start, messages=0)
            .on_conflict_do_nothing(index_elements=["account_id", "period", "start"])
        )


def lock_counters(conn: Connection, account_id: int, periods: list[tuple[str, date]]) -> dict[str, int]:
    """The counters of these periods, created at zero if missing and locked until the transaction ends
    (PostgreSQL; SQLite has one writer), so concurrent transactions meter one after the other."""
    _ensure(conn, account_id, periods)
    found: dict[str, int] = {}
    for period, start in periods:  # always day before month: every transaction locks in the same order
        found[period] = conn.execute(
            select(UsageCounter.messages)
            .where(
                UsageCounter.account_id == account_id,
                UsageCounter.period == period,
                UsageCounter.start == start,
            )
            .with_for_update()
        ).scalar_one()
    return found


# SQLite: one row per parameter tuple, run by the driver, the start bound as SQLAlchemy binds a `Date`.
_USAGE_UPSERT_SQLITE = (
    "INSERT INTO usage_counters (account_id, period, start, messages) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (account_id, period, start) DO UPDATE SET messages = usage_counters.messages + "
    "excluded.messages"
)


@functools.cache
def _usage_upsert(counters: int) -> TextClause:
    """The upsert of `count_usage` for this many counters on PostgreSQL, one statement built once:
    SQLAlchemy compiles a multi-row INSERT anew at every execution."""
    rows = ", ".join(f"(:account_id, :period_{i}, :start_{i}, :amount_{i})" for i in range(counters))
    return text(
        f"INSERT INTO usage_counters (account_id, period, start, messages) VALUES {rows} "
        "ON CONFLICT (account_id, period, start) DO UPDATE SET messages = usage_counters.messages + "
        "excluded.messages"
    ).bindparams(*(bindparam(f"start_{i}", type_=Date) for i in range(counters)))


def count_usage(conn: Connection, account_id: int, amounts: dict[tuple[str, date], int]) -> None:
    """Add to the counters of these periods, creating them as needed, in one statement: for accounts with no
    limit to check, so nothing is read or locked (concurrent additions commute)."""
    if not amounts:
        return
    if conn.dialect.name == "sqlite":
        sqlite_many(
            conn,
            _USAGE_UPSERT_SQLITE,
            [(account_id, period, start.isoformat(), amount) for (period, start), amount in amounts.items()],
        )
        return
    params: dict[str, object] = {"account_id": account_id}
    for i, ((period, start), amount) in enumerate(amounts.items()):
        params |= {f"period_{i}": period, f"start_{i}": start, f"amount_{i}": amount}
    conn.execute(_usage_upsert(len(amounts)), params)


def add_usage(conn: Connection, account_id: int, periods: list[tuple[str, date]], amount: int) -> None:
    for period, start in periods:
        conn.execute(
            update(UsageCounter)
            .where(
                UsageCounter.account_id == account_id,
                UsageCounter.period == period,
                UsageCounter.start == start,
            )
            .values(messages=UsageCounter.messages + amount)
        )


def read_usage(conn: Connection, account_id: int, periods: list[tuple[str, date]]) -> dict[str, int]:
    found = {period: 0 for period, _ in periods}
    for period, start in periods:
        value = conn.scalar(
            select(UsageCounter.messages).where(
                UsageCounter.account_id == account_id,
                UsageCounter.period == period,
                UsageCounter.start == start,
            )
        )
        found[period] = int(value or 0)
    return found


def count_contacts(conn: Connection, account_id: int) -> int:
    return int(conn.scalar(select(func.count()).where(Contact.account_id == account_id)) or 0)
