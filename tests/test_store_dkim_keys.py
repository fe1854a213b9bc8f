"""DKIM keys in the store: the key each domain had before 0004_dkim_keys becomes its first active key."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from estafeta.store import accounts, dkim_keys
from estafeta.store.db import MIGRATIONS, Database

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _migrate(db: Database, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_the_domains_key_becomes_its_first_active_key_and_back(db_url: str) -> None:
    db = Database(db_url)
    try:
        _migrate(db, "0004_abuse_reports")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, name, status, sending_tier, created_at) "
                    "VALUES (1, 'acme', 'active', 0, :now)"
                ),
                {"now": NOW.replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "INSERT INTO domains (id, account_id, name, dkim_selector, dkim_algorithm, "
                    "dkim_private_key, created_at) VALUES (7, 1, 'acme.test', 'est2025l', 'ed25519-sha256', "
                    "'c2VlZA==', :now)"
                ),
                {"now": NOW.replace(tzinfo=None)},
            )
        db.migrate()
        domain = db.call(accounts.find_domain, "acme.test")
        assert domain is not None
        (key,) = domain.keys
        assert (key.selector, key.algorithm, key.private_key, key.state) == (
            "est2025l",
            "ed25519-sha256",
            "c2VlZA==",
            "active",
        )
        assert key.activated_at == NOW and key.retired_at is None

        _migrate(db, "0004_abuse_reports", down=True)
        with db.engine.begin() as conn:
            row = conn.execute(text("SELECT dkim_selector, dkim_private_key FROM domains")).one()
        assert tuple(row) == ("est2025l", "c2VlZA==")
    finally:
        db.close()


def test_unfinished_deliveries_are_counted_per_key(db: Database) -> None:
    account = db.call(accounts.create_account, "acme", NOW)
    domain = db.call(accounts.add_domain, account.id, "acme.test", NOW)
    key = db.call(dkim_keys.add_key, domain.id, "s1", "rsa-sha256", "pem", "active", NOW)
    other = f"{key.id}1"  # another key's id that contains this one's digits
    with db.engine.begin() as conn:
        for message, keys, state in (("m1", f" {key.id} ", "deferred"), ("m2", f" {other} 5 ", "queued")):
            conn.execute(
                text(
                    "INSERT INTO messages (id, account_id, stream, source, from_address, subject, "
                    "message_id_header, raw, size, smtputf8, tags, metadata, dkim_keys, created_at) VALUES "
                    "(:id, :account, 'transactional', 'api', 'a@acme.test', '', '<x>', :raw, 1, false, "
                    "'[]', '{}', :keys, :now)"
                ),
                {"id": message, "account": account.id, "raw": b"x", "keys": keys, "now": NOW},
            )
            conn.execute(
                text(
                    "INSERT INTO deliveries (message_id, account_id, recipient, domain, stream, state, "
                    "attempts, next_attempt_at, created_at, updated_at) VALUES (:id, :account, "
                    "'b@x.test', 'x.test', 'transactional', :state, 0, :now, :now, :now)"
                ),
                {"id": message, "account": account.id, "state": state, "now": NOW},
            )
    # The space-enclosed lists keep a key apart from another whose id contains its digits.
    assert db.call(dkim_keys.unfinished_signed_with, key.id) == 1
    assert db.call(dkim_keys.unfinished_signed_with, int(other)) == 1
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE deliveries SET state = 'delivered' WHERE message_id = 'm1'"))
    assert db.call(dkim_keys.unfinished_signed_with, key.id) == 0
