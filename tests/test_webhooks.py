"""Webhooks: signatures, the back-off schedule, payloads, and the outbox (fan-out, ordered claims, replay)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from estafeta.store import accounts
from estafeta.store import events as events_store
from estafeta.store import webhooks as store
from estafeta.store.db import Database
from estafeta.store.models import Event
from estafeta.webhooks import new_secret, render_payload, retry_at, sign
from tests.factories import add_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800]


def test_signatures_verify_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    body = '{"type":"delivered"}'
    headers = sign(secret, "whd_7", datetime.now(UTC), body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"type": "delivered"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("delivered", "bounced"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_retries_back_off_and_go_on_for_the_whole_retry_period() -> None:
    now, failures, tries = T0, 0, [T0]
    while True:
        failures += 1
        next_at = retry_at(SCHEDULE, failures, T0, now, 24 * 3600)
        if next_at is None:
            break
        tries.append(next_at)
        now = next_at
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(tries)]
    assert gaps[:9] == SCHEDULE  # exponential back-off, then the last step repeats …
    assert tries[-1] == T0 + timedelta(hours=24)  # … and the last try is 24 h after the first
    assert all(b > a for a, b in itertools.pairwise(tries))
    assert len(tries) == 12


def test_the_payload_is_generic_over_event_types() -> None:
    event = events_store.EventRow(
        9, 1, None, None, "account_paused", T0, {"reason": "complaint rate 0.5%", "by": "reputation"}
    )
    body = json.loads(render_payload(event, None))
    assert body == {
        "id": "evt_9",
        "type": "account_paused",
        "timestamp": "2026-01-01T00:00:00Z",
        "account_id": 1,
        "message_id": None,
        "recipient": None,
        "message": None,
        "data": {"reason": "complaint rate 0.5%", "by": "reputation"},
    }
    context = store.MessageContext("broadcast", ["spring"], {"customer": 42})
    bounce = events_store.EventRow(10, 1, "msg_1", "a@x.test", "bounced", T0, {"bounce": {"kind": "hard"}})
    body = json.loads(render_payload(bounce, context))
    assert body["message"] == {"stream": "broadcast", "tags": ["spring"], "metadata": {"customer": 42}}
    assert body["data"]["bounce"]["kind"] == "hard"


def _event(db: Database, account: int, kind: str, message_id: str | None = None) -> None:
    db.call(
        add_event,
        account_id=account,
        type=kind,
        now=T0,
        message_id=message_id,
        recipient="a@x.test",
    )


def _render(event: events_store.EventRow, _: store.MessageContext | None) -> str:
    return json.dumps({"id": event.id, "type": event.type})


def test_fan_out_matches_endpoints_and_starts_after_their_creation(db: Database) -> None:
    acme = db.call(accounts.create_account, "acme", T0).id
    other = db.call(accounts.create_account, "other", T0).id
    _event(db, acme, "delivered", "msg_old")  # before any endpoint: nobody gets it
    every = db.call(store.create_endpoint, acme, "http://127.0.0.1:9/a", [], "", new_secret(), T0)
    bounces = db.call(store.create_endpoint, acme, "http://127.0.0.1:9/b", ["bounced"], "", new_secret(), T0)
    db.call(store.create_endpoint, other, "http://127.0.0.1:9/c", [], "", new_secret(), T0)
    off = db.call(store.create_endpoint, acme, "http://127.0.0.1:9/d", [], "", new_secret(), T0, False)
    for kind in ("delivered", "bounced", "opened"):
        _event(db, acme, kind, "msg_1")
    result = db.call(store.fan_out, 100, _render, T0)
    assert (result.events, result.created, result.gap) == (3, 4, None)
    assert [json.loads(d.payload)["type"] for d in db.call(store.list_deliveries, acme, every.id)] == [
        "opened",
        "bounced",
        "delivered",
    ]
    assert [d.event_type for d in db.call(store.list_deliveries, acme, bounces.id)] == ["bounced"]
    assert db.call(store.list_deliveries, acme, off.id) == []
    assert db.call(store.fan_out, 100, _render, T0).events == 0  # the cursor moved on
    assert db.call(store.fanout_lag) == 0


def test_fan_out_waits_at_a_missing_event_id_until_told_to_skip_it(db: Database) -> None:
    acme = db.call(accounts.create_account, "acme", T0).id
    endpoint = db.call(store.create_endpoint, acme, "http://127.0.0.1:9/a", [], "", new_secret(), T0)
    _event(db, acme, "delivered", "msg_1")
    newest = db.call(store.fan_out, 100, _render, T0)
    assert newest.events == 1

    def later(conn) -> None:  # type: ignore[no-untyped-def]
        last = conn.execute(Event.__table__.select().order_by(Event.id.desc())).first()
        conn.execute(
            insert(Event).values(id=last.id + 3, account_id=acme, type="opened", created_at=T0, data={})
        )

    db.call(later)  # ids last+1 and last+2 are missing: a transaction may still commit them
    waiting = db.call(store.fan_out, 100, _render, T0)
    assert waiting.events == 0 and waiting.gap is not None
    skipped = db.call(store.fan_out, 100, _render, T0, waiting.gap)
    assert skipped.events == 1 and skipped.gap is None
    assert [d.event_type for d in db.call(store.list_deliveries, acme, endpoint.id)] == [
        "opened",
        "delivered",
    ]


def test_claims_keep_each_message_in_order_and_respect_endpoint_room(db: Database) -> None:
    acme = db.call(accounts.create_account, "acme", T0).id
    endpoint = db.call(store.create_endpoint, acme, "http://127.0.0.1:9/a", [], "", new_secret(), T0)
    for message_id in ("msg_a", "msg_b"):
        for kind in ("accepted", "queued", "delivered"):
            _event(db, acme, kind, message_id)
    db.call(store.fan_out, 100, _render, T0)
    lease = T0 + timedelta(minutes=5)
    first = db.call(store.claim, "w1", T0, lease, 100, lambda _: 10)
    # only the first event of each message may go; the rest wait for it
    assert [json.loads(c.payload)["type"] for c in first] == ["accepted", "accepted"]
    assert db.call(store.claim, "w2", T0, lease, 100, lambda _: 10) == []  # leased, and the rest blocked
    # a failed attempt keeps the message's later events waiting until it is retried
    db.call(
        store.finish,
        "w1",
        [store.Outcome(first[0].id, T0, False, 500, "HTTP 500", "no", T0 + timedelta(seconds=5))],
    )
    assert db.call(store.finish, "w2", [store.Outcome(first[1].id, T0, True, 200, None, "", None)]) == 0
    db.call(store.finish, "w1", [store.Outcome(first[1].id, T0, True, 200, None, "ok", None)])
    second = db.call(store.claim, "w1", T0, lease, 100, lambda _: 10)
    assert [json.loads(c.payload)["type"] for c in second] == ["queued"]  # msg_b's next; msg_a waits
    db.call(store.finish, "w1", [store.Outcome(second[0].id, T0, True, 204, None, "", None)])
    later = T0 + timedelta(seconds=5)
    (oldest,) = db.call(store.claim, "w1", later, lease, 100, lambda _: 1)  # room for one: the earliest due
    assert json.loads(oldest.payload)["type"] == "delivered" and oldest.attempts == 0
    db.call(store.finish, "w1", [store.Outcome(oldest.id, later, True, 200, None, "", None)])
    (retry,) = db.call(store.claim, "w1", later, lease, 100, lambda _: 1)
    assert json.loads(retry.payload)["type"] == "accepted" and retry.attempts == 1
    log = {d.id: d for d in db.call(store.list_deliveries, acme, endpoint.id)}
    assert log[first[0].id].last_status == 500 and log[first[0].id].response_snippet == "no"
    assert log[first[1].id].state == "delivered" and log[first[1].id].delivered_at == T0


def test_failed_deliveries_can_be_replayed_but_not_while_being_sent(db: Database) -> None:
    acme = db.call(accounts.create_account, "acme", T0).id
    endpoint = db.call(store.create_endpoint, acme, "http://127.0.0.1:9/a", [], "", new_secret(), T0)
    delivery_id = db.call(store.add_delivery, endpoint, "webhook.test", "{}", T0)
    (claimed,) = db.call(store.claim, "w1", T0, T0 + timedelta(minutes=5), 10, lambda _: 1)
    assert db.call(store.replay, acme, endpoint.id, delivery_id, T0) is None  # in flight
    db.call(store.finish, "w1", [store.Outcome(claimed.id, T0, False, None, "timed out", None, None)])
    assert db.call(store.get_delivery, acme, endpoint.id, delivery_id).state == "failed"
    assert db.call(store.backlog)["failed"] == 1
    later = T0 + timedelta(days=3)
    again = db.call(store.replay, acme, endpoint.id, delivery_id, later)
    assert again is not None and again.state == "pending" and again.next_attempt_at == later
    (reclaimed,) = db.call(store.claim, "w1", later, later + timedelta(minutes=5), 10, lambda _: 1)
    assert reclaimed.retry_from == later  # a fresh retry period
    assert db.call(store.replay, acme + 1, endpoint.id, delivery_id, later) is None  # other accounts cannot


def test_without_a_listening_endpoint_events_are_passed_over_and_a_new_endpoint_gets_only_later_ones(
    db: Database,
) -> None:
    acme = db.call(accounts.create_account, "acme", T0).id
    quiet = db.call(accounts.create_account, "quiet", T0).id
    db.call(store.fan_out, 100, _render, T0)  # the cursor starts
    db.call(store.create_endpoint, acme, "http://127.0.0.1:9/off", [], "", new_secret(), T0, False)
    for kind in ("accepted", "queued", "delivered"):
        _event(db, acme, kind, "msg_1")
    passed = db.call(store.fan_out, 100, _render, T0)  # only a disabled endpoint: nobody listens
    assert (passed.events, passed.created, passed.gap) == (3, 0, None)
    assert db.call(store.fanout_lag) == 0
    endpoint = db.call(store.create_endpoint, acme, "http://127.0.0.1:9/a", [], "", new_secret(), T0)
    _event(db, quiet, "delivered", "msg_2")  # an account without an endpoint: read past, not delivered
    _event(db, acme, "opened", "msg_1")
    result = db.call(store.fan_out, 100, _render, T0)
    assert (result.events, result.created, result.gap) == (2, 1, None)
    assert [d.event_type for d in db.call(store.list_deliveries, acme, endpoint.id)] == ["opened"]
