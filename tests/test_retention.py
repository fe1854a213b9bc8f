"""Retention on both databases: old bodies, finished webhook deliveries and old events are pruned in
batches; anything still waiting, and anything younger, stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, insert, select, update

from estafeta.clock import ManualClock
from estafeta.config import RetentionSettings
from estafeta.retention import Retention
from estafeta.store import accounts
from estafeta.store import messages as message_store
from estafeta.store import reputation as reputation_store
from estafeta.store import webhooks as webhook_store
from estafeta.store.db import Database
from estafeta.store.models import Delivery, Event, Message, WebhookDelivery
from tests.factories import new_message

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _messages(db: Database, account: int, prefix: str, count: int, at: datetime, state: str) -> None:
    rows = [new_message(f"msg_{prefix}{i:05d}", account, [f"r{i}@example.test"]) for i in range(count)]

    def store(conn: Connection) -> None:
        message_store.insert_messages(conn, rows, at)
        ids = [r.id for r in rows]
        conn.execute(update(Delivery).where(Delivery.message_id.in_(ids)).values(state=state))

    db.call(store)


def _webhook_deliveries(
    db: Database, account: int, at: datetime, states: list[str], enabled: bool = True
) -> None:
    endpoint = db.call(
        webhook_store.create_endpoint, account, "https://h.example/x", [], "", "whsec_x", at, enabled
    )

    def store(conn: Connection) -> None:
        conn.execute(
            insert(WebhookDelivery),
            [
                {
                    "endpoint_id": endpoint.id,
                    "account_id": account,
                    "event_type": "delivered",
                    "payload": "{}",
                    "state": state,
                    "next_attempt_at": at,
                    "retry_from": at,
                    "created_at": at,
                }
                for state in states
            ],
        )

    db.call(store)


def _count(db: Database, query: object) -> int:
    return int(db.call(lambda conn: conn.scalar(query)))


async def test_old_finished_data_is_pruned_in_batches_and_the_rest_stays(db: Database) -> None:
    account = db.call(accounts.create_account, "acme", NOW).id
    old, young = NOW - timedelta(days=45), NOW - timedelta(days=5)
    _messages(db, account, "a", 7, old, "delivered")  # old and final: bodies go
    _messages(db, account, "b", 2, old, "held")  # old but waiting for an administrator: kept
    _messages(db, account, "c", 3, young, "delivered")  # final but young: kept
    _webhook_deliveries(db, account, old, ["pending", "pending"], enabled=False)  # a backlog nobody takes
    _webhook_deliveries(db, account, old, ["delivered", "failed", "delivered"])
    _webhook_deliveries(db, account, young, ["delivered"])
    ancient = NOW - timedelta(days=500)
    db.call(
        lambda conn: conn.execute(
            update(Event).where(Event.message_id.like("msg_a%")).values(created_at=ancient)
        )
    )

    retention = Retention(db, RetentionSettings(batch=2), ManualClock(NOW))
    pruned = await retention.prune()

    assert pruned == {"message_bodies": 9, "waited_bodies": 2, "webhook_deliveries": 5, "events": 14}
    empty = select(func.count()).select_from(Message).where(Message.raw == b"")
    assert _count(db, empty) == 7
    assert db.call(message_store.get_message, account, "msg_a00000") is not None  # the record stays
    held = select(func.count()).select_from(Message).where(Message.id.like("msg_b%"), Message.raw != b"")
    assert _count(db, held) == 2
    assert _count(db, select(func.count()).select_from(WebhookDelivery)) == 1
    assert _count(db, select(func.count()).select_from(Event)) == (2 + 3) * 2  # accepted + queued each
    assert await retention.prune() == {
        "message_bodies": 0,
        "waited_bodies": 2,  # the held ones, looked at again on each run
        "webhook_deliveries": 0,
        "events": 0,
    }


async def test_zero_days_keeps_everything(db: Database) -> None:
    account = db.call(accounts.create_account, "acme", NOW).id
    _messages(db, account, "a", 3, NOW - timedelta(days=900), "delivered")
    keep = RetentionSettings(message_bodies_days=0, webhook_deliveries_days=0, events_days=0)
    assert await Retention(db, keep, ManualClock(NOW)).prune() == {
        "message_bodies": 0,
        "waited_bodies": 0,
        "webhook_deliveries": 0,
        "events": 0,
    }
    assert _count(db, select(func.count()).select_from(Event)) == 6


async def test_a_message_that_waited_past_the_age_loses_its_body_once_it_is_final(db: Database) -> None:
    """Held for review at 30 days, a message keeps its body (approving the review sends it); once a review
    rejects it, or releases it and it is delivered, the body goes at the next run."""
    rejected = db.call(accounts.create_account, "acme", NOW).id
    released = db.call(accounts.create_account, "beta", NOW).id
    old = NOW - timedelta(days=45)
    _messages(db, rejected, "a", 3, old, "held")
    _messages(db, released, "b", 2, old, "held")
    retention = Retention(db, RetentionSettings(batch=2), ManualClock(NOW))
    with_body = select(Message.id).where(Message.raw != b"").order_by(Message.id)

    def bodies() -> list[str]:
        return list(db.call(lambda conn: conn.scalars(with_body).all()))

    assert (await retention.prune())["message_bodies"] == 5
    assert bodies() == ["msg_a00000", "msg_a00001", "msg_a00002", "msg_b00000", "msg_b00001"]

    def decide(conn: Connection) -> None:  # as the reviews' decisions move held recipients
        held = {"from_states": ("held",), "data": {"by": "admin:x"}}
        reputation_store.set_entries(conn, rejected, NOW, to_state="cancelled", event="cancelled", **held)
        reputation_store.set_entries(conn, released, NOW, to_state="queued", event="queued", **held)

    db.call(decide)
    assert (await retention.prune())["waited_bodies"] == 5  # each looked at once, two at a time
    assert bodies() == ["msg_b00000", "msg_b00001"]  # released: queued again, so still needed

    db.call(lambda conn: conn.execute(update(Delivery).values(state="delivered")))
    assert (await retention.prune())["waited_bodies"] == 2
    assert bodies() == []
    assert await retention.prune() == {
        "message_bodies": 0,
        "waited_bodies": 0,
        "webhook_deliveries": 0,
        "events": 0,
    }
