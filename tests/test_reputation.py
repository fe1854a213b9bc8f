"""Reputation policy on a real database: rolling metrics, thresholds, reviews, the CLI, link extraction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estafeta.audit import Actor, AuditFilter, AuditLog, cli_actor
from estafeta.cli import app as cli_app
from estafeta.clock import ManualClock
from estafeta.compliance.links import LinkChecker, extract_links
from estafeta.config import LinkSettings, Settings
from estafeta.reputation import QUIET_FACTOR, Reputation, evaluate, flag_for_review, measure
from estafeta.store import accounts as account_store
from estafeta.store import events as events_store
from estafeta.store import reputation as store
from estafeta.store.db import Database
from tests.factories import add_event
from tests.loopback_http import http_server

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'rep.db'}")
    database.migrate()
    return database


def _outcomes(db: Database, account_id: int, delivered: int, hard: int, at: datetime = NOW) -> None:
    def work(conn: object) -> None:
        for _ in range(delivered):
            add_event(conn, account_id=account_id, type="delivered", now=at)  # type: ignore[arg-type]
        for _ in range(hard):
            add_event(
                conn,  # type: ignore[arg-type]
                account_id=account_id,
                type="bounced",
                now=at,
                data={"bounce": {"kind": "hard", "reason": "user-unknown"}},
            )

    db.call(work)


def _settings(**reputation: object) -> Settings:
    return Settings(reputation={"min_volume": 100, **reputation})


def test_rates_count_only_above_the_minimum_volume(db: Database) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    _outcomes(db, account, delivered=40, hard=10)
    m = db.call(measure, account, NOW, _settings(), None)
    assert (m.outcomes, m.hard_bounced, m.bounce_rate, m.counted) == (50, 10, 0.2, False)
    assert db.call(evaluate, account, NOW, _settings()) is None  # 20% but only 50 outcomes


def test_the_window_is_count_and_time_based(db: Database) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    _outcomes(db, account, delivered=0, hard=50, at=NOW - timedelta(hours=30))  # outside 24 h
    _outcomes(db, account, delivered=100, hard=0)
    by_time = db.call(measure, account, NOW, _settings(window_hours=24), None)
    assert (by_time.outcomes, by_time.bounce_rate) == (100, 0.0)
    _outcomes(db, account, delivered=0, hard=10)
    by_count = db.call(measure, account, NOW, _settings(window_messages=20), None)
    assert (by_count.outcomes, by_count.hard_bounced) == (20, 10)


def test_warning_then_pause_with_events_and_a_review(db: Database) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    _outcomes(db, account, delivered=97, hard=3)  # 3%: over the 2.5% warning, under the 5% pause
    assert db.call(evaluate, account, NOW, _settings()) == "warning"
    assert db.call(evaluate, account, NOW, _settings()) is None  # warned once
    _outcomes(db, account, delivered=0, hard=5)  # 8 of 105
    assert db.call(evaluate, account, NOW, _settings()) == "paused"
    standing = db.call(store.standings, account)
    assert standing["broadcast"].state == "paused" and standing["transactional"].state == "active"
    kinds = ["account_warning", "account_paused", "review_requested"]
    flt = events_store.EventFilter(account, types=kinds)
    assert [e.type for e in db.call(events_store.list_events, flt, 100)] == kinds
    review = db.call(store.open_review, account)
    assert review is not None and review.metrics["hard_bounced"] == 8


def test_a_failure_among_new_outcomes_brings_the_evaluation_forward(db: Database) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    _outcomes(db, account, delivered=97, hard=3)  # over the 2.5% warning once evaluated
    reputation = Reputation(db, _settings(), ManualClock(NOW), evaluate_every=20)

    def state() -> str:
        return db.call(store.standings, account)["broadcast"].state

    def report(outcomes: list[tuple[int, bool]]) -> None:
        db.call(reputation.after_outcomes, outcomes, NOW)

    report([(account, True)] * 20)  # deliveries alone cannot raise a rate: not evaluated yet
    assert state() == "active"
    report([(account, True)] * 19 + [(account, False)])  # a failure among the next 20: evaluated
    assert state() == "warning"


def test_deliveries_alone_are_evaluated_less_often(db: Database) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    _outcomes(db, account, delivered=97, hard=3)
    reputation = Reputation(db, _settings(), ManualClock(NOW), evaluate_every=20)
    db.call(reputation.after_outcomes, [(account, True)] * (20 * QUIET_FACTOR - 1), NOW)
    assert db.call(store.standings, account)["broadcast"].state == "active"
    db.call(reputation.after_outcomes, [(account, True)], NOW)
    assert db.call(store.standings, account)["broadcast"].state == "warning"


def test_complaint_rate_warns_then_pauses(db: Database) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    settings = _settings(window_messages=2000)
    _outcomes(db, account, delivered=1400, hard=0)

    def complaint(conn: object) -> None:
        add_event(conn, account_id=account, type="complained", now=NOW)  # type: ignore[arg-type]

    db.call(complaint)  # 1 in 1400: 0.07%, over the 0.05% warning
    assert db.call(evaluate, account, NOW, settings) == "warning"
    db.call(complaint)  # 2 in 1400: 0.14%, over the 0.1% pause
    assert db.call(evaluate, account, NOW, settings) == "paused"
    assert db.call(store.open_review, account).reason.startswith("paused: complaint rate")  # type: ignore[union-attr]


def test_cli_lists_shows_and_decides_reviews(db: Database, tmp_path: Path) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    review_id = db.call(flag_for_review, account, "broadcast", "message m1 held: shortener", NOW)
    env = {"ESTAFETA_DATABASE_URL": f"sqlite:///{tmp_path / 'rep.db'}", "COLUMNS": "200"}
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["review", "list"], env=env)
    assert listed.exit_code == 0 and "shortener" in listed.stdout
    shown = runner.invoke(cli_app, ["review", "show", str(review_id)], env=env)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["reason"].startswith("message m1 held")
    assert json.loads(shown.stdout)["created_at"] == "2026-03-01T12:00:00Z"  # RFC 3339, as the API writes it
    rejected = runner.invoke(cli_app, ["review", "reject", str(review_id), "--note", "spam"], env=env)
    assert rejected.exit_code == 0, rejected.stdout
    assert db.call(store.standings, account)["broadcast"].state == "suspended"
    again = runner.invoke(cli_app, ["review", "approve", str(review_id)], env=env)
    assert again.exit_code == 1 and "rejected already" in again.stdout
    trail = db.call(store.audit_trail, review_id)
    assert [(a.action, a.actor, a.note) for a in trail] == [
        ("opened", "system", "message m1 held: shortener"),
        ("rejected", cli_actor().name, "spam"),
    ]


async def test_answers_carry_over_and_approval_resumes(db: Database) -> None:
    account = db.call(account_store.create_account, "acme", NOW).id
    rep = Reputation(db, _settings(), _FixedClock())
    _outcomes(db, account, delivered=90, hard=10)
    assert await rep.evaluate_now(account) == "paused"
    review = db.call(store.open_review, account)
    assert review is not None
    answers = {"collection": "a", "consent": "b", "content": "c", "frequency": "d"}
    await rep.answer(account, answers, "api:key")
    result = await rep.approve(review.id, Actor("admin:ops", "127.0.0.1"), "ok")
    assert result["state"] == "approved"
    assert db.call(store.standings, account)["broadcast"].state == "active"
    assert await rep.evaluate_now(account) is None  # metrics start afresh after an approval
    entries = await AuditLog(db).entries(AuditFilter(account_id=account))
    assert [(e.action, e.actor, e.target) for e in entries] == [
        ("review.approve", "admin:ops", f"review:{review.id}"),
        ("stream.pause", "system", "broadcast"),
    ]


async def test_links_are_extracted_and_listed_domains_are_found() -> None:
    html = '<a href="https://bit.ly/x?a=1&amp;b=2">x</a> and https://acme.test/page. <img src="x.png">'
    assert extract_links(html, "see http://t.co/abc, then") == [
        "https://bit.ly/x?a=1&b=2",
        "https://acme.test/page",
        "http://t.co/abc",
    ]
    checker = LinkChecker(LinkSettings(follow_redirects=False, blocklist=["bad.test"]))
    assert await checker.check(None, "https://sub.bit.ly/x https://notbit.ly/ http://www.bad.test/") == [
        "link https://sub.bit.ly/x uses the URL shortener bit.ly",
        "link http://www.bad.test/ points to the blocklisted domain bad.test",
    ]


async def test_links_are_never_followed_into_private_networks() -> None:
    """Without a proxy, a link (or a redirect) to a loopback host is not requested, however it is spelled."""
    redirect = b"HTTP/1.1 302 Found\r\nLocation: https://bit.ly/x\r\nContent-Length: 0\r\n\r\n"
    async with http_server(redirect) as (port, requests):
        checker = LinkChecker(LinkSettings(follow_redirects=True))
        spellings = [f"http://127.1:{port}/a", f"http://2130706433:{port}/b", f"http://localhost:{port}/c"]
        assert await checker.check(None, " ".join(spellings)) == []  # not reachable, so nothing seen
    assert requests == []


class _FixedClock:
    def now(self) -> datetime:
        return NOW
