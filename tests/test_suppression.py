"""Suppression lists on SQLite and PostgreSQL: entries and their audit trail, the policy gate's single
check, what failures suppress, the persistent-soft-bounce rule, and CSV export/import."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, event, select
from typer.testing import CliRunner

from estafeta import suppression
from estafeta.accept import Accepter, Submission
from estafeta.audit import cli_actor
from estafeta.auth import verify_secret
from estafeta.cli import app as cli_app
from estafeta.clock import ManualClock
from estafeta.compose import Draft, parse_address
from estafeta.config import DeliverySettings, Settings
from estafeta.core import Core
from estafeta.outcome import AttemptResult
from estafeta.queue import Queue
from estafeta.store import accounts, feedback, messages
from estafeta.store import admin_keys as admin_store
from estafeta.store import queue as q
from estafeta.store import suppressions as store
from estafeta.store.db import Database
from estafeta.store.models import Delivery, Event
from estafeta.world import World
from tests.factories import add_verified_domain, new_message, sandbox_dns

T = TypeVar("T")


def _account(db: Database, clock: ManualClock, name: str = "acme") -> int:
    return db.call(accounts.create_account, name, clock.now()).id


def _statements_run(db: Database, fn: Callable[..., T], *args: Any) -> tuple[T, list[str]]:
    """What `fn(conn, *args)` returns, and the SQL statements it ran: as the driver runs them on SQLite
    (where the accept path's statements bypass SQLAlchemy), as SQLAlchemy runs them on PostgreSQL."""
    seen: list[str] = []

    def note(statement: str) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "PRAGMA")):
            seen.append(statement)

    def run(conn: Connection) -> T:
        if db.is_sqlite:
            driver = conn.connection.driver_connection
            driver.set_trace_callback(note)
            try:
                return fn(conn, *args)
            finally:
                driver.set_trace_callback(None)
        listener = lambda *event_args: note(event_args[2])  # noqa: E731 (conn, cursor, statement, …)
        event.listen(conn, "before_cursor_execute", listener)
        try:
            return fn(conn, *args)
        finally:
            event.remove(conn, "before_cursor_execute", listener)

    return db.call(run), seen


def _events(db: Database, kind: str) -> list[Any]:
    return db.call(
        lambda conn: conn.execute(select(Event).where(Event.type == kind).order_by(Event.id)).all()
    )


# -- entries and the audit trail -------------------------------------------------------------------


def test_entries_are_unique_per_scope_whatever_the_case_and_every_change_is_audited(db: Database) -> None:
    clock = ManualClock()
    acme, globex = _account(db, clock), _account(db, clock, "globex")
    first = db.call(
        store.add,
        store.NewSuppression(acme, "address", "Ana@example.test", "manual"),
        actor="api:k1",
        now=clock.now(),
        note="asked by phone",
    )
    assert first is not None and first.scope == "account"
    again = store.NewSuppression(acme, "address", "ana@EXAMPLE.test", "complaint")
    assert db.call(store.add, again, actor="system", now=clock.now()) is None
    for scope in (globex, None):  # another account's list and the global list are separate
        entry = store.NewSuppression(scope, "address", "ana@example.test", "hard-bounce")
        assert db.call(store.add, entry, actor="system", now=clock.now()) is not None
    assert (
        db.call(
            store.add,
            store.NewSuppression(None, "address", "ANA@example.test", "manual"),
            actor="cli",
            now=clock.now(),
        )
        is None
    )

    clock.advance(60)
    removed = db.call(store.remove, acme, "ANA@example.TEST", actor="api:k2", now=clock.now(), note="typo")
    assert removed is not None and removed.value == "Ana@example.test" and removed.reason == "manual"
    assert db.call(store.remove, acme, "ana@example.test", actor="api:k2", now=clock.now()) is None
    assert db.call(store.get, globex, "ana@example.test") is not None  # untouched

    trail = db.call(store.audit_trail, acme, "ana@example.test")
    assert [(a.action, a.reason, a.actor, a.note) for a in trail] == [
        ("add", "manual", "api:k1", "asked by phone"),
        ("remove", "manual", "api:k2", "typo"),
    ]
    assert trail[1].at - trail[0].at == timedelta(seconds=60)
    assert [a.actor for a in db.call(store.audit_trail, None)] == ["system"]


def test_listing_searches_filters_and_pages_one_scope(db: Database) -> None:
    clock = ManualClock()
    acme = _account(db, clock)
    for i in range(5):
        entry = store.NewSuppression(
            acme, "address", f"user{i}@example.test", "manual" if i % 2 else "complaint"
        )
        db.call(store.add, entry, actor="cli", now=clock.now())
    db.call(
        store.add, store.NewSuppression(None, "domain", "example.test", "no-mx"), actor="cli", now=clock.now()
    )
    everything = db.call(store.list_entries, acme)
    assert [e.value for e in everything] == [f"user{i}@example.test" for i in range(5)]
    assert [e.value for e in db.call(store.list_entries, acme, search="USER3")] == ["user3@example.test"]
    assert len(db.call(store.list_entries, acme, reason="complaint")) == 3
    page = db.call(store.list_entries, acme, after_id=everything[1].id, limit=2)
    assert [e.value for e in page] == ["user2@example.test", "user3@example.test"]
    assert [e.value for e in db.call(store.list_entries, None)] == ["example.test"]
    assert db.call(store.list_entries, acme, search="%") == []  # a wildcard is a character here


# -- the policy gate's check -----------------------------------------------------------------------


def test_screen_finds_account_global_and_domain_entries_and_traps_in_one_query(db: Database) -> None:
    clock = ManualClock()
    acme, globex = _account(db, clock), _account(db, clock, "globex")
    for entry in (
        store.NewSuppression(acme, "address", "both@example.test", "unsubscribe"),
        store.NewSuppression(None, "address", "both@example.test", "hard-bounce"),
        store.NewSuppression(None, "address", "gone@example.test", "hard-bounce"),
        store.NewSuppression(None, "domain", "dead.test", "no-mx"),
        store.NewSuppression(acme, "domain", "competitor.test", "manual"),
        store.NewSuppression(globex, "address", "theirs@example.test", "complaint"),
        store.NewSuppression(None, "address", "listed-trap@example.test", "spam-trap"),
    ):
        db.call(store.add, entry, actor="cli", now=clock.now())
    traps = suppression.SpamTraps(["trap@example.test", "traps.test"])
    recipients = [
        "Both@Example.test",
        "gone@example.test",
        "anyone@dead.test",
        "ceo@competitor.test",
        "theirs@example.test",
        "fine@example.test",
        "trap@example.test",
        "x@traps.test",
        "listed-trap@example.test",
        *[f"more{i}@example.test" for i in range(40)],
    ]
    found, statements = _statements_run(db, suppression.screen, acme, recipients, traps)
    assert len(statements) == 1
    summary = {r: (s.reason, s.scope, s.trap) for r, s in found.items()}
    assert summary == {
        "Both@Example.test": ("unsubscribe", "account", False),  # the account's own entry is named first
        "gone@example.test": ("hard-bounce", "global", False),
        "anyone@dead.test": ("no-mx", "global", False),
        "ceo@competitor.test": ("manual", "account", False),
        "trap@example.test": ("spam-trap", "global", True),
        "x@traps.test": ("spam-trap", "global", True),
        "listed-trap@example.test": ("spam-trap", "global", True),
    }


def _settings(url: str, **overrides: Any) -> Settings:
    return Settings(**{"database_url": url, "hostname": "mta.estafeta.test", **overrides})


async def _accepter(db: Database, clock: ManualClock, world: World, **overrides: Any) -> tuple[Accepter, int]:
    core = Core(_settings(db.url, **sandbox_dns(world), **overrides), clock=clock, db=db)
    account = _account(db, clock)
    await add_verified_domain(core, account, "acme.test", "ed25519-sha256")
    return core.accepter, account


def _submission(*recipients: str) -> Submission:
    draft = Draft(
        from_=parse_address("hello@acme.test"),
        to=[parse_address(r) for r in recipients],
        subject="Hello",
        text="Hello there.\n",
    )
    return Submission(draft)


async def test_policy_gate_drops_suppressed_recipients_and_records_why(
    db: Database, dns_world: World
) -> None:
    clock = ManualClock()
    accepter, account = await _accepter(db, clock, dns_world, suppression={"spam_traps": ["traps.test"]})
    db.call(
        store.add,
        store.NewSuppression(account, "address", "left@gmail.test", "complaint"),
        actor="cli",
        now=clock.now(),
    )
    db.call(
        store.add, store.NewSuppression(None, "domain", "dead.test", "no-mx"), actor="cli", now=clock.now()
    )

    (mixed,) = await accepter.accept(
        account, [_submission("ana@gmail.test", "left@gmail.test", "x@dead.test", "pot@traps.test")]
    )
    assert mixed.recipients == ["ana@gmail.test"]
    assert [(s.recipient, s.reason, s.scope, s.trap) for s in mixed.suppressed] == [
        ("left@gmail.test", "complaint", "account", False),
        ("x@dead.test", "no-mx", "global", False),
        ("pot@traps.test", "spam-trap", "global", True),
    ]
    view = db.call(messages.get_message, account, mixed.id)
    assert view is not None
    assert {r.recipient: r.state for r in view.recipients} == {
        "ana@gmail.test": "queued",
        "left@gmail.test": "suppressed",
        "x@dead.test": "suppressed",
        "pot@traps.test": "suppressed",
    }
    suppressed = {e.recipient: e.data for e in view.events if e.type == "suppressed"}
    assert suppressed["left@gmail.test"] == {"reason": "complaint", "scope": "account"}
    assert suppressed["x@dead.test"] == {"reason": "no-mx", "scope": "global"}
    assert [e.recipient for e in view.events if e.type == "trap_hit"] == ["pot@traps.test"]
    trap_entry = db.call(store.get, None, "pot@traps.test")
    assert trap_entry is not None and trap_entry.reason == "spam-trap"
    # only the one mailable recipient was queued for delivery
    assert [c.recipient for c in db.call(q.claim, "w", clock.now(), clock.now(), 10)] == ["ana@gmail.test"]

    # every recipient suppressed: the message is still recorded, nothing is queued
    (dropped,) = await accepter.accept(account, [_submission("left@gmail.test")])
    assert dropped.recipients == [] and [s.recipient for s in dropped.suppressed] == ["left@gmail.test"]
    assert db.call(messages.get_message, account, dropped.id) is not None
    raw = await accepter.accept_raw(
        account, "hello@acme.test", ["y@dead.test"], b"From: hello@acme.test\r\nSubject: s\r\n\r\nhi\r\n"
    )
    assert raw.recipients == [] and raw.suppressed[0].reason == "no-mx"
    assert db.call(q.claim, "w", clock.now(), clock.now(), 10) == []
    assert len(_events(db, "trap_hit")) == 1


# -- what failures suppress ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "reason", "from_dns", "expected"),
    [
        ("global", "user-unknown", False, {(1, "address", "hard-bounce"), (None, "address", "hard-bounce")}),
        ("account", "mailbox-disabled", False, {(1, "address", "hard-bounce")}),
        ("none", "mailbox-disabled", False, set()),
        ("global", "no-such-domain", True, {(None, "domain", "no-mx")}),
        (
            "global",
            "no-such-domain",
            False,
            {(1, "address", "hard-bounce"), (None, "address", "hard-bounce")},
        ),
        ("none", "other", False, set()),
        ("none", "authentication-failed", False, set()),
        ("none", "spam-content", False, set()),
        ("none", "mailbox-full", False, set()),
        ("none", "out-of-office", False, set()),
    ],
)
def test_what_a_bounce_suppresses(
    scope: str, reason: str, from_dns: bool, expected: set[tuple[Any, ...]]
) -> None:
    found = suppression.for_bounce(1, "Ana@gone.test", scope, reason, "550 …", from_dns=from_dns)
    assert {(e.account_id, e.kind, e.reason) for e in found} == expected
    assert all(e.value == ("gone.test" if e.kind == "domain" else "Ana@gone.test") for e in found)


def _enqueue(db: Database, clock: ManualClock, account: int, recipient: str, count: int) -> None:
    stamp = f"{clock.now().timestamp():.0f}"
    rows = [new_message(f"msg_{recipient}_{stamp}_{i}", account, [recipient]) for i in range(count)]
    db.call(messages.insert_messages, rows, clock.now())


async def test_final_bounces_suppress_in_the_transaction_that_records_them(db: Database) -> None:
    clock = ManualClock()
    account = _account(db, clock)
    for recipient in ("nobody@bounce.test", "x@no-such-domain.test", "blocked@gmail.test"):
        _enqueue(db, clock, account, recipient, 1)
    queue = Queue(db, DeliverySettings(), clock, "w1")
    jobs = {j.recipient: j for j in await queue.claim(10)}
    applied = await queue.finish(
        [
            AttemptResult(
                jobs["nobody@bounce.test"],
                False,
                550,
                "550 5.1.1 User unknown",
                False,
                {"bounce": {"kind": "hard", "reason": "user-unknown", "status": "5.1.1", "scope": "global"}},
            ),
            AttemptResult(
                jobs["x@no-such-domain.test"],
                False,
                None,
                "5.1.2 domain does not exist",
                False,
                {
                    "bounce": {
                        "kind": "hard",
                        "reason": "no-such-domain",
                        "status": "5.1.2",
                        "scope": "global",
                    }
                },
            ),
            AttemptResult(
                jobs["blocked@gmail.test"],
                False,
                550,
                "550 5.7.26 unauthenticated",
                False,
                {
                    "bounce": {
                        "kind": "soft",
                        "reason": "authentication-failed",
                        "status": "5.7.26",
                        "scope": "none",
                    }
                },
            ),
        ]
    )
    assert applied == 3
    entries = {(e.account_id, e.value, e.reason) for e in db.call(store.list_entries, account)}
    entries |= {(e.account_id, e.value, e.reason) for e in db.call(store.list_entries, None)}
    assert entries == {
        (account, "nobody@bounce.test", "hard-bounce"),
        (None, "nobody@bounce.test", "hard-bounce"),
        (None, "no-such-domain.test", "no-mx"),
    }
    assert db.call(store.audit_trail, None)[0].note.startswith("message msg_")


async def test_addresses_that_keep_failing_softly_become_suppressed(db: Database) -> None:
    clock = ManualClock()
    account = _account(db, clock)
    delivery = DeliverySettings(retry_schedule=[60], max_age=100)
    queue = Queue(db, delivery, clock, "w1", suppression.soft_rule(Settings(database_url=db.url).suppression))
    full = {"bounce": {"kind": "soft", "reason": "mailbox-full", "status": "4.2.2"}}

    async def expire(count: int) -> None:
        _enqueue(db, clock, account, "stuffed@full.test", count)
        clock.advance(100)  # every attempt now comes too late: the entries bounce as expired
        jobs = await queue.claim(10)
        assert len(jobs) == count
        await queue.finish([AttemptResult(j, False, 452, "452 4.2.2 Mailbox full", True, full) for j in jobs])

    await expire(2)  # two messages failed for good: below the default limit of three
    assert [e["expired"] for e in (r.data for r in _events(db, "bounced"))] == [True, True]
    assert db.call(store.get, account, "stuffed@full.test") is None
    clock.advance(8 * 86400)  # outside the 7-day window those two no longer count
    await expire(1)
    assert db.call(store.get, account, "stuffed@full.test") is None
    await expire(2)  # three distinct messages within the window
    entry = db.call(store.get, account, "stuffed@full.test")
    assert entry is not None and entry.reason == "soft-bounce-persistent"
    assert entry.detail == "3 messages failed softly within 7 days"
    assert db.call(store.get, None, "stuffed@full.test") is None  # the account's list only


def test_soft_asynchronous_bounces_count_once_per_message(db: Database) -> None:
    clock = ManualClock()
    account = _account(db, clock)
    _enqueue(db, clock, account, "slow@example.test", 2)
    targets = db.call(
        lambda conn: [
            feedback.delivery_target(conn, i) for i in conn.scalars(select(Delivery.id).order_by(Delivery.id))
        ]
    )
    rule = store.SoftRule(2, timedelta(days=1))
    data = {"async": True, "bounce": {"kind": "soft", "reason": "mailbox-full", "status": "4.2.2"}}
    for _ in range(3):  # three reports about the first message are one failed message
        db.call(
            feedback.record,
            targets[0],
            event="soft_bounced",
            data=data,
            now=clock.now(),
            soft_failure=True,
            rule=rule,
        )
    assert db.call(store.get, account, "slow@example.test") is None
    clock.advance(3600)
    db.call(
        feedback.record,
        targets[1],
        event="soft_bounced",
        data=data,
        now=clock.now(),
        soft_failure=True,
        rule=rule,
    )
    entry = db.call(store.get, account, "slow@example.test")
    assert entry is not None and entry.reason == "soft-bounce-persistent"


# -- CSV -------------------------------------------------------------------------------------------


def test_csv_export_imports_back_as_it_is(db: Database) -> None:
    clock = ManualClock()
    acme, globex = _account(db, clock), _account(db, clock, "globex")
    originals = [
        store.NewSuppression(acme, "address", "Ana.Pérez@example.test", "complaint", 'said "spam", twice'),
        store.NewSuppression(
            acme, "address", "bob@xn--bcher-kva.test", "hard-bounce", "550 5.1.1\nUser unknown"
        ),
        store.NewSuppression(acme, "domain", "competitor.test", "manual"),
    ]
    for entry in originals:
        db.call(store.add, entry, actor="cli", now=clock.now())
    text = suppression.to_csv(db.call(store.list_entries, acme))
    assert text.splitlines()[0] == "value,kind,reason,detail,created_at"

    entries, errors = suppression.parse_csv(text, globex)
    assert errors == []
    result = db.call(suppression.import_entries, entries, actor="api:k", now=clock.now())
    assert (result.added, result.already_listed) == (3, 0)
    copied = [(e.kind, e.value, e.reason, e.detail) for e in db.call(store.list_entries, globex)]
    assert copied == [(o.kind, o.value, o.reason, o.detail) for o in originals]
    again = db.call(suppression.import_entries, entries, actor="api:k", now=clock.now())
    assert (again.added, again.already_listed) == (0, 3)
    assert {a.note for a in db.call(store.audit_trail, globex)} == {"import"}


def test_csv_rows_are_checked_one_by_one_and_unreadable_files_refused() -> None:
    entries, errors = suppression.parse_csv(
        "Value,Reason\nok@example.test,\nnot an address,manual\nfine.test,spam-trap\nx@example.test,bogus\n",
        None,
    )
    assert [(e.kind, e.value, e.reason) for e in entries] == [
        ("address", "ok@example.test", "manual"),
        ("domain", "fine.test", "spam-trap"),
    ]
    assert [(e.line, e.value) for e in errors] == [(3, "not an address"), (5, "x@example.test")]
    assert "unknown reason" in errors[1].reason
    for unreadable in ("address\nok@example.test\n", 'value\n"unterminated\n', ""):
        with pytest.raises(suppression.SuppressionError):
            suppression.parse_csv(unreadable, None)
    _, errors = suppression.parse_csv("value\na@example.test,extra\n", None)
    assert [(e.line, e.reason) for e in errors] == [(2, "more fields than the header names")]


# -- the command line ------------------------------------------------------------------------------


def test_cli_edits_account_and_global_lists_and_creates_admin_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = Database(url)
    db.migrate()
    clock = ManualClock()
    acme = _account(db, clock)
    runner = CliRunner(env={"ESTAFETA_DATABASE_URL": url, "COLUMNS": "200"})

    def run(*args: str) -> str:
        result = runner.invoke(cli_app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    assert "suppressed" in run(
        "suppressions", "add", "Ana@Gmail.test", "--account", "acme", "--note", "phone"
    )
    assert "already" in run("suppressions", "add", "ana@gmail.test", "--account", str(acme))
    run("suppressions", "add", "dead.test", "--global", "--reason", "no-mx")
    run("suppressions", "add", "ana@gmail.test", "--global", "--reason", "hard-bounce")
    found = run("suppressions", "search", "ana@gmail.test", "--account", "acme")
    assert "Ana@gmail.test" in found and "The global list covers it: ana@gmail.test (hard-bounce)" in found
    listed = run("suppressions", "list", "--global")
    assert "dead.test" in listed and "no-mx" in listed and "2 entries" in listed

    exported = tmp_path / "global.csv"
    run("suppressions", "export", "--global", "--output", str(exported))
    assert exported.read_text().splitlines()[1].startswith("dead.test,domain,no-mx,")
    assert "1 added, 1 listed already" in run("suppressions", "import", str(exported), "--account", "acme")
    assert "removed" in run("suppressions", "remove", "ANA@gmail.test", "--account", "acme", "--note", "ok")
    assert "removed" in run("suppressions", "remove", "dead.test", "--global")
    actors = {(a.action, a.actor) for a in db.call(store.audit_trail, None)}
    cli = cli_actor().name
    assert actors == {("add", cli), ("remove", cli)}

    bad = tmp_path / "bad.csv"
    bad.write_text("value\nok@gmail.test\nnot an address\n")
    refused = runner.invoke(cli_app, ["suppressions", "import", str(bad), "--global"])
    assert refused.exit_code == 1 and "line 3" in refused.output and "nothing was imported" in refused.output
    assert db.call(store.get, None, "ok@gmail.test") is None
    for scopes in ([], ["--global", "--account", "acme"]):
        assert runner.invoke(cli_app, ["suppressions", "list", *scopes]).exit_code == 1
    assert runner.invoke(cli_app, ["suppressions", "list", "--account", "nobody"]).exit_code == 1

    token = run("admin", "create-key", "--name", "ops").split(": ")[-1].strip()
    prefix = token.split("_")[1]
    assert token.startswith("estadm_")
    key = db.call(admin_store.find_admin_key, prefix)
    assert key is not None and key.name == "ops" and verify_secret(key.secret_hash, token.split("_", 2)[2])
    db.close()
