"""Fixing a campaign's recipients in chunks (on SQLite and PostgreSQL): only subscribed contacts (of the
segment, if any), each once, and a crash in the middle of a chunk resumes after the last chunk stored."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, select

from estafeta.audience.campaigns import fix_recipients, start
from estafeta.store import accounts
from estafeta.store import audience as audience_store
from estafeta.store import campaigns as store
from estafeta.store.db import Database
from estafeta.store.models import CampaignRecipient

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Crash(RuntimeError):
    """Stands for a process dying before its transaction commits."""


def _people(db: Database, list_id: int, account_id: int, count: int) -> dict[str, int]:
    """`count` subscribed contacts; every fifth unsubscribes afterwards, every seventh never confirms."""
    entries = [
        audience_store.NewSubscription(
            f"p{i:02d}@x.test",
            {"plan": "pro" if i % 2 else "free"},
            "unconfirmed" if i % 7 == 3 else "subscribed",
            "import",
            NOW,
        )
        for i in range(count)
    ]
    rows = db.call(audience_store.subscribe_many, account_id, list_id, entries, renew=False, now=NOW)
    ids = {r.email: r.contact_id for r in rows}
    for i in range(0, count, 5):
        db.call(audience_store.unsubscribe, ids[f"p{i:02d}@x.test"], [list_id], "link", NOW)
    return ids


def _campaign(
    db: Database, list_id: int, account_id: int, segment_id: int | None = None
) -> store.CampaignRow:
    new = store.NewCampaign(
        account_id, "March", list_id, segment_id, "news@x.test", "", "Hi", None, "hi", 10.0
    )
    return db.call(store.create, new, NOW)


def _recipients(conn: Connection, campaign_id: int) -> list[str]:
    return list(
        conn.scalars(
            select(CampaignRecipient.email)
            .where(CampaignRecipient.campaign_id == campaign_id)
            .order_by(CampaignRecipient.id)
        ).all()
    )


def _crash_while_fixing(conn: Connection, row: store.CampaignRow) -> None:
    assert not fix_recipients(conn, row, NOW, 4)
    raise Crash


@pytest.fixture
def setup(db: Database) -> tuple[int, int, dict[str, int]]:
    account = db.call(accounts.create_account, "acme", NOW)
    news = db.call(audience_store.create_list, account.id, "News", "pub1", "news@x.test", False, NOW)
    return account.id, news.id, _people(db, news.id, account.id, 30)


def test_recipients_are_fixed_in_chunks_and_a_crash_mid_chunk_resumes_without_duplicates(
    db: Database, setup: tuple[int, int, dict[str, int]]
) -> None:
    account_id, list_id, _ = setup
    expected = [f"p{i:02d}@x.test" for i in range(30) if i % 5 and i % 7 != 3]
    row = _campaign(db, list_id, account_id)
    assert db.call(start, row, NOW, 4)
    assert db.call(_recipients, row.id) == expected[:4]  # the first chunk comes with the start
    with pytest.raises(Crash):
        db.call(_crash_while_fixing, row)
    assert db.call(_recipients, row.id) == expected[:4]  # the crashed chunk left nothing behind
    chunks, done = 1, False
    while not done:
        done = db.call(fix_recipients, row, NOW, 4)
        chunks += 1
        assert len(db.call(_recipients, row.id)) == min(4 * chunks, len(expected))
    assert chunks == -(-len(expected) // 4)  # 21 contacts in six chunks of at most four
    assert db.call(_recipients, row.id) == expected  # each subscribed contact once, in contact order
    assert db.call(fix_recipients, row, NOW, 4)  # nothing left: a later call adds nobody
    assert db.call(_recipients, row.id) == expected
    (fixed,) = [c for c in db.call(store.list_for, account_id) if c.id == row.id]
    assert fixed.recipients_fixed_at == NOW


def test_two_processes_fixing_at_once_add_each_recipient_once(
    db: Database, setup: tuple[int, int, dict[str, int]]
) -> None:
    account_id, list_id, _ = setup
    row = _campaign(db, list_id, account_id)
    assert db.call(start, row, NOW, 2)

    def fix_all() -> None:
        while not db.call(fix_recipients, row, NOW, 2):
            pass

    with ThreadPoolExecutor(2) as pool:
        for running in [pool.submit(fix_all) for _ in range(2)]:
            running.result()
    assert db.call(_recipients, row.id) == [f"p{i:02d}@x.test" for i in range(30) if i % 5 and i % 7 != 3]


def test_a_segment_campaign_fixes_the_segments_subscribed_contacts_chunk_by_chunk(
    db: Database, setup: tuple[int, int, dict[str, int]]
) -> None:
    account_id, list_id, _ = setup
    segment = db.call(
        audience_store.create_segment,
        account_id, list_id, "Pro", "all", [{"attribute": "plan", "op": "eq", "value": "pro"}], NOW,
    )  # fmt: skip
    row = _campaign(db, list_id, account_id, segment.id)
    assert db.call(start, row, NOW, 3)
    while not db.call(fix_recipients, row, NOW, 3):
        pass
    assert db.call(_recipients, row.id) == [
        f"p{i:02d}@x.test" for i in range(30) if i % 2 and i % 5 and i % 7 != 3
    ]


def test_a_paused_and_resumed_campaign_keeps_its_recipients(
    db: Database, setup: tuple[int, int, dict[str, int]]
) -> None:
    account_id, list_id, ids = setup
    row = _campaign(db, list_id, account_id)
    assert db.call(start, row, NOW, 100)
    before = db.call(_recipients, row.id)
    assert db.call(store.transition, account_id, row.id, ("sending",), "paused", NOW)
    db.call(audience_store.unsubscribe, ids["p01@x.test"], [list_id], "link", NOW)
    (paused,) = [c for c in db.call(store.list_for, account_id) if c.id == row.id]
    assert db.call(start, paused, NOW, 100)
    assert db.call(_recipients, row.id) == before  # the runner skips p01 when it comes to it
