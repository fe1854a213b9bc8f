"""Dashboard users on a real database (SQLite and PostgreSQL): passwords, sessions that expire, invitations
that work once, roles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from estafeta.accounts import Accounts
from estafeta.audit import SYSTEM
from estafeta.clock import ManualClock
from estafeta.store.db import Database
from estafeta.users import SESSION_IDLE, UserError, Users, dashboard_secret, may
from tests.tampering import tampered

NOW = datetime(2026, 5, 1, 9, tzinfo=UTC)
PASSWORD = "a long enough password"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def users(db: Database, clock: ManualClock) -> Users:
    return Users(db, clock, dashboard_secret(db))


@pytest.fixture
def accounts(db: Database, clock: ManualClock) -> Accounts:
    return Accounts(db, clock)


async def test_passwords_are_hashed_and_checked(accounts: Accounts, users: Users) -> None:
    account = (await accounts.create("acme", actor=SYSTEM)).id
    user = await users.create("Ana@Acme.test", PASSWORD, account_id=account, role="owner", actor=SYSTEM)
    assert user.email == "Ana@acme.test" and PASSWORD not in user.password_hash
    assert user.password_hash.startswith("$argon2")
    assert (await users.authenticate("ana@ACME.test", PASSWORD)) is not None  # any case of the address
    assert await users.authenticate("ana@acme.test", "wrong password") is None
    assert await users.authenticate("nobody@acme.test", PASSWORD) is None
    with pytest.raises(UserError, match="exists already"):
        await users.create("ana@acme.test", PASSWORD, operator=True, actor=SYSTEM)
    with pytest.raises(UserError, match="at least 10"):
        await users.create("bob@acme.test", "short", operator=True, actor=SYSTEM)


async def test_sessions_expire_when_idle_and_end_on_sign_out(
    accounts: Accounts, users: Users, clock: ManualClock
) -> None:
    account = (await accounts.create("acme", actor=SYSTEM)).id
    user = await users.create("ana@acme.test", PASSWORD, account_id=account, role="developer", actor=SYSTEM)
    session = await users.start_session(user, origin="127.0.0.1")
    who = await users.identify(session.cookie)
    assert who is not None and (who.account_id, who.role, who.account_name) == (account, "developer", "acme")
    assert who.may("send") and not who.may("manage")
    assert await users.identify(session.cookie + "x") is None  # a forged signature
    token, _, signature = session.cookie.rpartition(".")
    other = "B" if token.endswith("A") else "A"  # a token that differs, whatever its last character
    assert await users.identify(f"{token[:-1]}{other}.{signature}") is None
    clock.advance(SESSION_IDLE.total_seconds() - 60)
    assert await users.identify(session.cookie) is not None  # used: the expiry slides
    clock.advance(SESSION_IDLE.total_seconds() - 60)
    assert await users.identify(session.cookie) is not None
    clock.advance(SESSION_IDLE.total_seconds() + 1)
    assert await users.identify(session.cookie) is None  # idle too long
    again = await users.start_session(user, origin="127.0.0.1")
    await users.end_session(again.cookie)
    assert await users.identify(again.cookie) is None


async def test_a_new_password_ends_every_session(accounts: Accounts, users: Users) -> None:
    user = await users.create("op@estafeta.test", PASSWORD, operator=True, actor=SYSTEM)
    session = await users.start_session(user, origin="127.0.0.1")
    await users.set_password(user.id, "another long password", actor=SYSTEM)
    assert await users.identify(session.cookie) is None
    assert await users.authenticate("op@estafeta.test", "another long password") is not None


async def test_an_invitation_works_once_and_not_after_it_expires(
    accounts: Accounts, users: Users, clock: ManualClock
) -> None:
    account = (await accounts.create("acme", actor=SYSTEM)).id
    owner = await users.create("ana@acme.test", PASSWORD, account_id=account, role="owner", actor=SYSTEM)
    _, token = await users.invite(account, "bob@acme.test", "viewer", owner.id, actor=SYSTEM)
    found = await users.invitation(token)
    assert found is not None and found[1] == "acme" and found[0].role == "viewer"
    assert await users.invitation(tampered(token)) is None  # forged
    bob = await users.accept(token, "bob's password 1", "Bob", origin="127.0.0.1")
    assert [(m.account_name, m.role) for m in await users.accounts_of(bob.id)] == [("acme", "viewer")]
    with pytest.raises(UserError, match=r"not valid|used already"):
        await users.accept(token, "bob's password 1", origin="127.0.0.1")
    _, late = await users.invite(account, "carol@acme.test", "developer", owner.id, actor=SYSTEM)
    clock.advance(8 * 24 * 3600)
    assert await users.invitation(late) is None
    _, revoked = await users.invite(account, "dan@acme.test", "developer", owner.id, actor=SYSTEM)
    assert await users.revoke_invitation(account, (await users.invitations(account))[0].id, actor=SYSTEM)
    assert await users.invitation(revoked) is None


async def test_an_existing_user_joins_with_their_own_password(accounts: Accounts, users: Users) -> None:
    first = (await accounts.create("acme", actor=SYSTEM)).id
    second = (await accounts.create("globex", actor=SYSTEM)).id
    ana = await users.create("ana@acme.test", PASSWORD, account_id=first, role="owner", actor=SYSTEM)
    _, token = await users.invite(second, "ana@acme.test", "developer", None, actor=SYSTEM)
    with pytest.raises(UserError, match="enter its password"):
        await users.accept(token, "a guessed password", origin="127.0.0.1")
    await users.accept(token, PASSWORD, origin="127.0.0.1")
    assert {m.account_name for m in await users.accounts_of(ana.id)} == {"acme", "globex"}
    session = await users.start_session(ana, origin="127.0.0.1")
    who = await users.identify(session.cookie)
    assert who is not None
    assert await users.switch_account(who, second)
    assert not await users.switch_account(who, 999)
    switched = await users.identify(session.cookie)
    assert switched is not None and switched.account_id == second and switched.role == "developer"


async def test_the_last_owner_cannot_leave(accounts: Accounts, users: Users) -> None:
    account = (await accounts.create("acme", actor=SYSTEM)).id
    ana = await users.create("ana@acme.test", PASSWORD, account_id=account, role="owner", actor=SYSTEM)
    bob = await users.create("bob@acme.test", PASSWORD, account_id=account, role="viewer", actor=SYSTEM)
    with pytest.raises(UserError, match="last owner"):
        await users.remove_member(account, ana.id, actor=SYSTEM)
    await users.remove_member(account, bob.id, actor=SYSTEM)
    assert [m.email for m in await users.members(account)] == ["ana@acme.test"]


def test_roles() -> None:
    assert may("owner", "manage") and may("owner", "send") and may("owner", "read")
    assert may("developer", "send") and not may("developer", "manage")
    assert may("viewer", "read") and not may("viewer", "send")
    assert not may(None, "read")
