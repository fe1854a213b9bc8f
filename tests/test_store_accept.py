"""The accept transaction's statements, which run on the driver with fixed SQL: they write and read exactly
what SQLAlchemy writes and reads for the same values (bytes, Unicode, JSON, quotes, times, booleans). On
SQLite a short accept transaction runs on the event loop's thread, a larger one on the database thread."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, insert, select
from sqlalchemy.exc import IntegrityError

from estafeta.accept import AcceptError, GroupCommit
from estafeta.accept.commit import INLINE_BYTES, INLINE_RECIPIENTS, Rows
from estafeta.store import accounts, plans, reputation, suppressions
from estafeta.store import messages as message_store
from estafeta.store.db import Database
from estafeta.store.messages import Suppressed
from estafeta.store.models import Delivery, Event, Message, UsageCounter
from tests.factories import add_event, gate_held, new_message

NOW = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
TABLES = (Message, Delivery, Event)


def _batch(account_id: int) -> list[message_store.NewMessage]:
    tricky = "Grüße \"quoted\" 'single' ; -- \\ \x01 \t \u2028 🎉"
    return [
        new_message(
            "msg_bytes",
            account_id,
            ["a@gmail.test", "B@Gmail.TEST", "ü@exämple.test"],
            raw=bytes(range(256)) * 3,
            subject=tricky,
            from_address="Ünïcode@shop.test",
            smtputf8=True,
            dkim_keys=" 3 7 ",
            tags=["a", "ü", 'quo"te', ""],
            meta={"k": tricky, "nested": {"x": [1, 2.5, None, True, False]}, "ü": ["ß"]},
            lint=[{"rule": "r", "detail": tricky}],
        ),
        new_message(
            "msg_held", account_id, ["c@outlook.test"], stream="broadcast", held=["link: bad.test", tricky]
        ),
        new_message(
            "msg_suppressed",
            account_id,
            ["d@yahoo.test"],
            suppressed=[
                Suppressed("e@yahoo.test", "hard-bounce", "account"),
                Suppressed("trap@trap.test", "spam-trap", "global", trap=True),
            ],
        ),
        new_message("msg_none_left", account_id, [], suppressed=[Suppressed("f@x.test", "manual", "global")]),
    ]


def _dump(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables as SQLite stores it: each column's storage class and value."""
    sqlite = conn.connection.driver_connection
    dumped = {}
    for model in TABLES:
        table = model.__table__
        columns = ", ".join(f"typeof({c.name}), {c.name}" for c in table.columns)
        dumped[table.name] = sqlite.execute(f"SELECT {columns} FROM {table.name} ORDER BY 2").fetchall()
    return dumped


def _copy(source: Connection, target: Connection) -> None:
    """The rows `source` holds, read and written again by SQLAlchemy (Core inserts of its typed values)."""
    for model in TABLES:
        table = model.__table__
        rows = [dict(row._mapping) for row in source.execute(select(table).order_by(*table.primary_key))]
        if rows:
            target.execute(insert(table), rows)


def test_accepted_rows_on_sqlite_are_the_rows_sqlalchemy_writes(tmp_path: Path) -> None:
    written, reference = (Database(f"sqlite:///{tmp_path / name}.db") for name in ("written", "reference"))
    try:
        for db in (written, reference):
            db.migrate()
            account = db.call(accounts.create_account, "acme", NOW).id
        written.call(message_store.insert_messages, _batch(account), NOW)
        with written.engine.connect() as source, reference.engine.begin() as target:
            _copy(source, target)
            stored = _dump(source)
            assert stored == _dump(target)
        assert [len(stored[table]) for table in ("messages", "deliveries", "events")] == [4, 8, 13]
    finally:
        written.close()
        reference.close()


def test_a_refused_row_on_sqlite_raises_sqlalchemys_error_without_its_values(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'e.db'}")
    db.migrate()
    try:
        secret = new_message("msg_x", 999, ["secret@gmail.test"])  # no such account: a foreign key fails
        with pytest.raises(IntegrityError, match="FOREIGN KEY") as raised:
            db.call(message_store.insert_messages, [secret], NOW)
        assert "secret@" not in str(raised.value) and "msg_x" not in str(raised.value)
        assert db.call(lambda conn: conn.scalar(select(func.count()).select_from(Message))) == 0
    finally:
        db.close()


def test_accepted_rows_read_back_as_given(db: Database) -> None:
    account = db.call(accounts.create_account, "acme", NOW).id
    batch = _batch(account)
    db.call(message_store.insert_messages, batch, NOW)
    first = db.call(message_store.get_message, account, "msg_bytes")
    assert first is not None
    assert db.call(message_store.get_raw, account, "msg_bytes") == bytes(range(256)) * 3
    assert (first.subject, first.from_address, first.size) == (batch[0].subject, batch[0].from_address, 768)
    assert (first.tags, first.meta, first.created_at) == (batch[0].tags, batch[0].meta, NOW)
    assert [(r.recipient, r.state, r.attempts, r.next_attempt_at) for r in first.recipients] == [
        (rcpt, "queued", 0, NOW) for rcpt in batch[0].recipients
    ]
    assert [(e.type, e.recipient, e.data) for e in first.events] == [
        (
            "accepted",
            None,
            {"source": "api", "stream": "transactional", "recipients": 3, "lint": batch[0].lint},
        ),
        *(("queued", rcpt, {}) for rcpt in batch[0].recipients),
    ]
    held = db.call(message_store.get_message, account, "msg_held")
    assert held is not None and [r.state for r in held.recipients] == ["held"]
    assert held.events[-1].data == {"reasons": batch[1].held}
    dropped = db.call(message_store.get_message, account, "msg_suppressed")
    assert dropped is not None
    assert [(r.recipient, r.state) for r in dropped.recipients] == [
        ("d@yahoo.test", "queued"),
        ("e@yahoo.test", "suppressed"),
        ("trap@trap.test", "suppressed"),
    ]
    assert [e.type for e in dropped.events] == ["accepted", "suppressed", "suppressed", "trap_hit", "queued"]
    assert db.call(suppressions.get, None, "trap@trap.test") is not None


def test_admission_reads_what_the_separate_reads_do(db: Database) -> None:
    account = db.call(accounts.create_account, "acme", NOW).id
    bare = db.call(reputation.admission, account)
    assert (bare.tier, bare.plan, bare.standings) == (0, None, db.call(reputation.standings, account))

    def configure(conn: Connection) -> None:
        plan = plans.create_plan(conn, "Grüße 'pro'", 1000, None, 50, True, NOW)
        plans.assign(conn, account, plan.id, "admin", NOW)
        reputation.set_tier(conn, account, 2)
        reputation.set_standing(conn, account, "broadcast", "paused", "complaints ü", "admin", NOW)

    db.call(configure)
    read = db.call(reputation.admission, account)
    assert read.tier == db.call(reputation.tier, account) == 2
    assert read.plan == db.call(plans.plan_of, account) and read.plan is not None
    assert read.plan.dedicated_pool is True and read.plan.created_at == NOW
    assert read.standings == db.call(reputation.standings, account)
    assert read.standings["broadcast"].changed_at == NOW
    assert db.call(reputation.admission, 999_999) == reputation.Admission(0, bare.standings, None)


def test_matching_finds_the_entries_get_finds(db: Database) -> None:
    account = db.call(accounts.create_account, "acme", NOW).id
    other = db.call(accounts.create_account, "other", NOW).id
    entries = [
        suppressions.NewSuppression(account, "address", "Ünï@Shop.test", "manual", 'it\'s "quoted"'),
        suppressions.NewSuppression(None, "address", "ünï@shop.test", "hard-bounce"),
        suppressions.NewSuppression(None, "domain", "shop.test", "no-mx"),
        suppressions.NewSuppression(other, "address", "x@shop.test", "complaint"),
    ]
    for entry in entries:
        db.call(suppressions.add, entry, actor="admin", now=NOW)
    keys = ["ünï@shop.test", "shop.test", "x@shop.test", "nobody@none.test"]
    found = db.call(suppressions.matching, account, keys)
    expected = [db.call(suppressions.get, scope, key) for scope in (account, None) for key in keys]
    assert sorted(found, key=lambda row: row.id) == [row for row in expected if row is not None]
    assert all(row.created_at == NOW for row in found)


@pytest.mark.parametrize("rounds", [1, 2])
def test_usage_counts_add_up(db: Database, rounds: int) -> None:
    account = db.call(accounts.create_account, "acme", NOW).id
    spans = {("day", date(2026, 3, 1)): 3, ("month", date(2026, 3, 1)): 3, ("day", date(2026, 3, 2)): 1}
    for _ in range(rounds):
        db.call(plans.count_usage, account, spans)
    assert db.call(plans.read_usage, account, [("day", date(2026, 3, 1)), ("month", date(2026, 3, 1))]) == {
        "day": 3 * rounds,
        "month": 3 * rounds,
    }
    counters = db.call(lambda conn: conn.execute(select(UsageCounter.start, UsageCounter.messages)).all())
    assert sorted(counters) == [
        (date(2026, 3, 1), 3 * rounds),
        (date(2026, 3, 1), 3 * rounds),
        (date(2026, 3, 2), rounds),
    ]


class _ThreadNoting:
    """A gate that admits everything and notes the thread each transaction ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def admit(self, conn: Connection, entries: list[tuple[Rows, datetime]]) -> list[Rows | AcceptError]:
        self.threads.append(threading.get_ident())
        return [rows for rows, _ in entries]


async def test_a_few_small_messages_are_written_on_the_loop_thread_and_larger_batches_on_the_database_thread(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'inline.db'}")
    db.migrate()
    account = db.call(accounts.create_account, "acme", NOW).id
    commits, gate = GroupCommit(db), _ThreadNoting()
    small = [new_message("msg_small", account, ["a@gmail.test"])]
    large = [new_message("msg_large", account, ["b@gmail.test"], raw=b"x" * (INLINE_BYTES + 1))]
    many = [new_message("msg_many", account, [f"r{n}@gmail.test" for n in range(INLINE_RECIPIENTS + 1)])]
    for rows in (small, large, many):
        assert [r.id for r in await commits.commit(rows, NOW, gate=gate)] == [rows[0].id]
    loop_thread = threading.get_ident()
    assert gate.threads[0] == loop_thread
    assert loop_thread not in gate.threads[1:]
    stored = db.call(lambda conn: conn.execute(select(func.count()).select_from(Delivery)).scalar_one())
    assert stored == 2 + INLINE_RECIPIENTS + 1
    db.close()


def test_warm_up_usage_counts_queued_recipients_of_the_window_from_their_own_index(db: Database) -> None:
    """A warm-up-limited account's storing transaction counts its queued recipients over 24 hours: exactly
    those, and on SQLite from the partial index of queued events, not from every event of the window."""
    account = db.call(accounts.create_account, "acme", NOW).id
    other = db.call(accounts.create_account, "other", NOW).id
    since = NOW - timedelta(days=1)

    def fill(conn: Connection) -> None:
        for n in range(5):
            add_event(conn, account_id=account, type="queued", now=NOW - timedelta(hours=n))
            add_event(conn, account_id=account, type="delivered", now=NOW - timedelta(hours=n))
        add_event(conn, account_id=account, type="queued", now=since - timedelta(seconds=1))
        add_event(conn, account_id=account, type="queued", now=since)
        add_event(conn, account_id=other, type="queued", now=NOW)

    db.call(fill)
    assert db.call(reputation.usage, account, since) == 6
    assert db.call(reputation.busy_accounts, since) == {account: 6, other: 1}
    if not db.is_sqlite:
        return
    statements: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        db.call(reputation.usage, account, since)
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    (statement, parameters) = next(s for s in statements if "count" in s[0].lower())
    plan = db.call(lambda conn: conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all())
    assert any("COVERING INDEX ix_events_queued" in str(row) for row in plan), plan


async def test_callers_who_come_while_another_process_writes_join_one_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'join.db'}"
    db, other = Database(url), Database(url)
    db.migrate()
    account = db.call(accounts.create_account, "acme", NOW).id
    commits, gate = GroupCommit(db), _ThreadNoting()

    def send(n: int) -> asyncio.Task[Rows]:
        rows = [new_message(f"msg_{n}", account, [f"r{n}@gmail.test"])]
        return asyncio.create_task(commits.commit(rows, NOW, gate=gate))

    with gate_held(other):  # another process's transaction holds SQLite's one writer lock
        first = send(1)
        await asyncio.sleep(0.05)  # its writer waits for the gate
        later = [send(2), send(3)]
        await asyncio.sleep(0.05)
    stored = await asyncio.wait_for(asyncio.gather(first, *later), 10)
    assert [[r.id for r in rows] for rows in stored] == [["msg_1"], ["msg_2"], ["msg_3"]]
    assert len(gate.threads) == 1  # one transaction for all three
    db.close()
    other.close()
