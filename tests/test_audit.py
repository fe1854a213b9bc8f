"""The audit log: written in the transaction of the change it records, never holding a secret, read newest
first with filters and a cursor; on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection

from estafeta.audit import (
    SYSTEM,
    Actor,
    AuditFilter,
    AuditLog,
    SecretDetail,
    cli_actor,
    record,
    redact,
)
from estafeta.auth import ApiKeys
from estafeta.changes import Changes
from estafeta.clock import ManualClock
from estafeta.config import WebhookSettings
from estafeta.plans import DatabaseMeter, Plans
from estafeta.store import accounts as account_store
from estafeta.store.db import Database
from estafeta.suppression import Suppressions
from estafeta.users import Users
from estafeta.webhook_endpoints import WebhookEndpoints

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
OPS = Actor("admin:ops1", "192.0.2.7")


def _accounts(conn: Connection) -> list[str]:
    return [a.name for a in account_store.list_accounts(conn)]


async def test_an_entry_commits_and_rolls_back_with_its_change(db: Database) -> None:
    class Refused(Exception):
        pass

    def change_then_fail(conn: Connection) -> None:
        row = account_store.create_account(conn, "acme", T0)
        record(conn, OPS, "account.create", at=T0, account_id=row.id, target="acme")
        raise Refused

    with pytest.raises(Refused):
        db.call(change_then_fail)
    assert db.call(_accounts) == [] and await AuditLog(db).entries(AuditFilter()) == []

    def change(conn: Connection) -> int:
        row = account_store.create_account(conn, "acme", T0)
        record(conn, OPS, "account.create", at=T0, account_id=row.id, target="acme", details={"n": 1})
        return row.id

    account_id = db.call(change)
    (entry,) = await AuditLog(db).entries(AuditFilter())
    assert (entry.actor, entry.origin, entry.account_id, entry.action, entry.target, entry.details) == (
        "admin:ops1",
        "192.0.2.7",
        account_id,
        "account.create",
        "acme",
        {"n": 1},
    )
    assert entry.at == T0


@pytest.mark.parametrize(
    "name", ["password", "new_password", "signing_secret", "token", "private_key", "key_material", "key"]
)
def test_a_detail_named_like_a_secret_is_refused_and_nothing_is_written(db: Database, name: str) -> None:
    def change(conn: Connection) -> None:
        account_store.create_account(conn, "acme", T0)
        record(conn, OPS, "account.create", at=T0, target="acme", details={name: "hunter2", "scope": "full"})

    with pytest.raises(SecretDetail, match=name):
        db.call(change)
    assert db.call(_accounts) == []


async def test_text_that_looks_like_a_credential_is_redacted(db: Database) -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"
    details = {
        "note": "customer pasted est_1a2b3c_Zm9vYmFyYmF6 and estadm_9f9f_c2VjcmV0X3Zh in the ticket",
        "url": "https://hook:s3cr3t@hooks.example.com/in?x=1",
        "header": "Authorization: Bearer abc.def.ghi",
        "pem": pem,
        "list": ["est_ab12_secretpart", "plain"],
    }
    db.call(lambda conn: record(conn, OPS, "note.add", at=T0, target="est_ab12_secretpart", details=details))
    (entry,) = await AuditLog(db).entries(AuditFilter())
    assert entry.target == "est_ab12_[redacted]"
    assert entry.details == {
        "note": "customer pasted est_1a2b3c_[redacted] and estadm_9f9f_[redacted] in the ticket",
        "url": "https://hook:[redacted]@hooks.example.com/in?x=1",
        "header": "Authorization: Bearer [redacted]",
        "pem": "[redacted]",
        "list": ["est_ab12_[redacted]", "plain"],
    }
    assert redact("review 12 approved by admin:ops1") == "review 12 approved by admin:ops1"


def _seed(conn: Connection) -> None:
    """Seven entries a minute apart: 0..6."""
    plan = [
        (OPS, 1, "review.approve"),
        (OPS, 2, "review.reject"),
        (SYSTEM, None, "plan.create"),
        (Actor("api:k1", "198.51.100.1"), 1, "api_key.create"),
        (Actor("api:k1", "198.51.100.1"), 1, "apixkey.create"),  # `_` is no wildcard in the group filter
        (Actor("user:3/ana@acme.test", "203.0.113.9"), 1, "user.invite"),
        (OPS, 2, "reviewer.note"),  # not in the `review` group
    ]
    for i, (actor, account, action) in enumerate(plan):
        record(conn, actor, action, at=T0 + timedelta(minutes=i), account_id=account, target=str(i))


async def test_filters_and_cursor_pages_newest_first(db: Database) -> None:
    db.call(_seed)
    log = AuditLog(db)

    async def targets(where: AuditFilter, before: int | None = None, limit: int = 100) -> list[str]:
        return [e.target for e in await log.entries(where, before_id=before, limit=limit)]

    assert await targets(AuditFilter()) == ["6", "5", "4", "3", "2", "1", "0"]
    assert await targets(AuditFilter(account_id=2)) == ["6", "1"]
    assert await targets(AuditFilter(action="review")) == ["1", "0"]
    assert await targets(AuditFilter(action="review.approve")) == ["0"]
    assert await targets(AuditFilter(action="api_key")) == ["3"]
    assert await targets(AuditFilter(actor="admin:ops1", account_id=2)) == ["6", "1"]
    assert await targets(AuditFilter(actor="user:3/ana@acme.test")) == ["5"]
    window = AuditFilter(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert await targets(window) == ["3", "2"]

    pages, before = [], None
    while True:
        page = await log.entries(AuditFilter(account_id=1), before_id=before, limit=2)
        pages.append([e.target for e in page])
        if len(page) < 2:
            break
        before = page[-1].id
    assert pages == [["5", "4"], ["3", "0"], []]


async def test_services_record_the_actor_and_only_what_happened(db: Database) -> None:
    clock = ManualClock(T0)
    account_id = db.call(account_store.create_account, "acme", T0).id
    keys = ApiKeys(db, clock, Changes(db, 0))
    key = await keys.create(account_id, "deploy", "send", actor=OPS)
    assert not await keys.revoke(account_id, "nosuchkey", actor=OPS)  # nothing revoked: nothing recorded
    assert await keys.revoke(account_id, key.prefix, actor=cli_actor())
    suppressions = Suppressions(db, clock)
    await suppressions.add(None, "dead.test", reason="no-mx", actor=OPS)
    await suppressions.add(account_id, "ana@acme.test", actor=OPS)  # an account's own list: not audited
    entries = await AuditLog(db).entries(AuditFilter())
    assert [(e.action, e.actor, e.origin, e.account_id, e.target) for e in entries] == [
        ("suppression.global_add", "admin:ops1", "192.0.2.7", None, "dead.test"),
        ("api_key.revoke", cli_actor().name, "cli", account_id, key.prefix),
        ("api_key.create", "admin:ops1", "192.0.2.7", account_id, key.prefix),
    ]
    assert entries[2].details == {"name": "deploy", "scope": "send"}
    assert key.token not in repr(entries)


def test_details_are_plain_values_only(db: Database) -> None:
    with pytest.raises(TypeError, match="dict"):
        db.call(lambda conn: record(conn, OPS, "note.add", at=T0, details={"nested": {"a": 1}}))
    with pytest.raises(ValueError, match="at most"):
        db.call(lambda conn: record(conn, OPS, "note.add", at=T0, details={f"d{i}": i for i in range(21)}))


async def test_team_webhook_and_plan_changes_are_recorded(db: Database) -> None:
    clock = ManualClock(T0)
    account_id = db.call(account_store.create_account, "acme", T0).id
    owner = Actor("user:1/ana@acme.test", "203.0.113.9")
    users = Users(db, clock, b"s" * 32)
    ana = await users.create(
        "ana@acme.test", "a long enough password", account_id=account_id, role="owner", actor=SYSTEM
    )
    _, token = await users.invite(account_id, "bob@acme.test", "viewer", ana.id, actor=owner)
    bob = await users.accept(token, "bob's long password", origin="198.51.100.4")
    await users.set_role(account_id, bob.id, "developer", actor=owner)
    await users.set_password(bob.id, "another long password", actor=cli_actor())
    await users.remove_member(account_id, bob.id, actor=owner)
    webhooks = WebhookEndpoints(db, WebhookSettings(allow_private_addresses=True), clock, lambda: None)
    endpoint = await webhooks.create(account_id, "https://hook:pw@hooks.example.com/in", actor=owner)
    await webhooks.update(account_id, endpoint.id, {"enabled": False}, rotate_secret=True, actor=owner)
    await webhooks.remove(account_id, endpoint.id, actor=owner)
    plans = Plans(db, clock, DatabaseMeter())
    await plans.create("Starter", messages_per_day=100, actor=OPS)
    await plans.assign(account_id, "Starter", OPS)

    entries = await AuditLog(db).entries(AuditFilter())
    bob_target = f"user:{bob.id}/bob@acme.test"
    assert [(e.action, e.actor, e.target) for e in entries] == [
        ("plan.assign", "admin:ops1", "Starter"),
        ("plan.create", "admin:ops1", "Starter"),
        ("webhook.delete", owner.name, f"endpoint:{endpoint.id}"),
        ("webhook.update", owner.name, f"endpoint:{endpoint.id}"),
        ("webhook.create", owner.name, f"endpoint:{endpoint.id}"),
        ("user.remove", owner.name, bob_target),
        ("user.password", cli_actor().name, bob_target),
        ("user.role", owner.name, bob_target),
        ("user.join", bob_target, bob_target),
        ("user.invite", owner.name, "bob@acme.test"),
        ("user.create", "system", f"user:{ana.id}/ana@acme.test"),
    ]
    by_action = {e.action: e for e in entries}
    assert by_action["user.join"].origin == "198.51.100.4"
    assert by_action["webhook.update"].details == {"changed": ["enabled", "secret"], "enabled": False}
    assert by_action["webhook.create"].details["url"] == "https://hook:[redacted]@hooks.example.com/in"
    assert endpoint.secret not in repr(entries)
    platform_wide = {"plan.create", "user.password"}  # a plan, a user: no one account
    assert all((e.account_id is None) == (e.action in platform_wide) for e in entries)


async def test_long_text_is_cut_to_fit(db: Database) -> None:
    db.call(
        lambda conn: record(conn, OPS, "note.add", at=T0, target="t" * 1000, details={"note": "n" * 1000})
    )
    (entry,) = await AuditLog(db).entries(AuditFilter())
    assert (len(entry.target), len(entry.details["note"])) == (400, 500)  # type: ignore[arg-type]
