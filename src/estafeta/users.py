"""Dashboard users: accounts' members with roles, platform operators, sessions and invitations.

Roles in an account: `owner` (everything, including the team), `developer` (send: campaigns, lists,
suppressions, keys, webhook replays; and read) and `viewer` (read only). Operators run the platform
(accounts, plans, the review queue, the global suppression list) and are members of no account unless
invited like anyone else; they may look at any account's pages, read only (`inspect`).

Passwords are kept as argon2 hashes. A session is a random token: the browser holds it in a signed,
HttpOnly cookie, the database a SHA-256 of it with its user, the account being looked at, a CSRF token
and an expiry that slides with use (`SESSION_IDLE`) up to `SESSION_MAX` after login. An invitation is a
database row plus a signed, expiring link that carries the row's id and a random nonce; it works once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer
from sqlalchemy import Connection

from estafeta.audit import Actor, record, user_name
from estafeta.auth import hash_secret, verify_secret
from estafeta.clock import Clock
from estafeta.compose import AddressError, parse_address
from estafeta.ids import parse_id
from estafeta.store import accounts as account_store
from estafeta.store import users as store
from estafeta.store.db import Database

ROLES = ("owner", "developer", "viewer")
CAPABILITIES = {"read": set(ROLES), "send": {"owner", "developer"}, "manage": {"owner"}}
SESSION_IDLE = timedelta(hours=12)
SESSION_MAX = timedelta(days=7)
SESSION_TOUCH = timedelta(minutes=1)  # a session's expiry is written again at most this often
INVITATION_TTL = timedelta(days=7)
MIN_PASSWORD = 10
ACTOR_KINDS = {"api": "API key", "admin": "admin key", "smtp": "SMTP credential"}


class UserError(ValueError):
    """A request about users that cannot be carried out; `field` names the input at fault."""

    def __init__(self, field: str, reason: str, status: int = 422) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


def normalise_email(text: str) -> str:
    """An address normalised the way recipients are (so `.test` sandboxes work too)."""
    try:
        return parse_address(text.strip()).email
    except AddressError as exc:
        raise UserError("email", exc.reason) from exc


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError("password", f"use at least {MIN_PASSWORD} characters")
    if len(password) > 1000:
        raise UserError("password", "use at most 1000 characters")
    return password


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError("role", f"one of {', '.join(ROLES)}")
    return role


def may(role: str | None, capability: str) -> bool:
    """Whether a member with `role` may do what `capability` (read | send | manage) covers."""
    return role is not None and role in CAPABILITIES[capability]


@dataclass(frozen=True)
class Identity:
    """Who is signed in, the account they are looking at (with their role in it) and their accounts."""

    user: store.UserRow
    session_id: str
    csrf_token: str
    account_id: int | None
    role: str | None
    memberships: list[store.MembershipRow] = field(default_factory=list)
    inspected: str | None = None  # an operator looking at an account they are no member of: its name

    def may(self, capability: str) -> bool:
        return may(self.role, capability)

    @property
    def account_name(self) -> str:
        if self.inspected is not None:
            return self.inspected
        return next((m.account_name for m in self.memberships if m.account_id == self.account_id), "")


@dataclass(frozen=True)
class NewSession:
    cookie: str  # the signed token for the browser
    csrf_token: str
    expires_at: datetime


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def dashboard_secret(db: Database) -> bytes:
    """The platform's key for session cookies and invitation links, made on first use and shared by every
    process on the database."""
    return bytes.fromhex(
        db.call(account_store.set_state_if_absent, "dashboard_secret", secrets.token_hex(32))
    )


class Users:
    """The users service: sign-in, sessions, memberships and invitations."""

    def __init__(self, db: Database, clock: Clock, secret: bytes) -> None:
        self.db = db
        self.clock = clock
        self._cookies = Signer(secret, salt="estafeta.session")
        self._invitations = URLSafeTimedSerializer(secret, salt="estafeta.invitation")

    # -- users -------------------------------------------------------------------------------------

    async def create(
        self,
        email: str,
        password: str,
        *,
        name: str = "",
        operator: bool = False,
        account_id: int | None = None,
        role: str | None = None,
        actor: Actor,
    ) -> store.UserRow:
        """A new user, optionally with a role in an account (`account_id` and `role` together)."""
        email = normalise_email(email)
        check_password(password)
        if (account_id is None) != (role is None):
            raise UserError("role", "name an account and a role together")
        if role is not None:
            check_role(role)
        password_hash = await asyncio.to_thread(hash_secret, password)
        return await self.db.run(
            _create_user,
            email,
            " ".join(name.split()),
            password_hash,
            operator,
            account_id,
            role,
            self.clock.now(),
            actor,
        )

    async def set_password(self, user_id: int, password: str, *, actor: Actor) -> None:
        """A new password; every session of the user ends."""
        password_hash = await asyncio.to_thread(hash_secret, check_password(password))
        now = self.clock.now()

        def work(conn: Connection) -> None:
            store.set_password(conn, user_id, password_hash)
            store.delete_user_sessions(conn, user_id)
            record(conn, actor, "user.password", at=now, target=_user_target(conn, user_id))

        await self.db.run(work)

    async def authenticate(self, email: str, password: str) -> store.UserRow | None:
        """The user with this email and password, or None (also for disabled users)."""
        row = await self.db.run(store.find_user, email.strip())
        # An unknown email costs an argon2 check all the same (see `verify_secret`).
        ok = await asyncio.to_thread(verify_secret, row.password_hash if row else None, password)
        if row is None or not ok or row.disabled_at is not None:
            return None
        return row

    async def find(self, email: str) -> store.UserRow | None:
        return await self.db.run(store.find_user, email.strip())

    async def everyone(self) -> list[tuple[store.UserRow, list[store.MembershipRow]]]:
        """Every user with their accounts and roles."""

        def work(conn: Connection) -> list[tuple[store.UserRow, list[store.MembershipRow]]]:
            return [(user, store.memberships(conn, user.id)) for user in store.list_users(conn)]

        return await self.db.run(work)

    async def actor_names(self, actors: Iterable[str]) -> dict[str, str]:
        """What the audit trails' actors read as on a page: `user:<id>` is the user's email; an API key,
        an admin key, the command line, the recipient or the platform are named as such."""

        def work(conn: Connection) -> dict[str, str]:
            names: dict[str, str] = {}
            for actor in set(actors):
                kind, _, rest = actor.partition(":")
                user_id = parse_id(rest.partition("/")[0]) if kind == "user" else None
                user = store.get_user(conn, user_id) if user_id is not None else None
                if user is not None:
                    names[actor] = user.email
                elif kind in ACTOR_KINDS and rest:
                    names[actor] = f"{ACTOR_KINDS[kind]} {rest}"
                else:
                    names[actor] = actor
            return names

        return await self.db.run(work)

    async def accounts_of(self, user_id: int) -> list[store.MembershipRow]:
        return await self.db.run(store.memberships, user_id)

    async def members(self, account_id: int) -> list[store.MemberRow]:
        return await self.db.run(store.members, account_id)

    async def invitations(self, account_id: int) -> list[store.InvitationRow]:
        return await self.db.run(store.list_invitations, account_id)

    async def set_role(self, account_id: int, user_id: int, role: str, *, actor: Actor) -> None:
        check_role(role)
        now = self.clock.now()

        def work(conn: Connection) -> None:
            store.set_membership(conn, user_id, account_id, role, now)
            target = _user_target(conn, user_id)
            record(
                conn, actor, "user.role", at=now, account_id=account_id, target=target, details={"role": role}
            )

        await self.db.run(work)

    async def remove_member(self, account_id: int, user_id: int, *, actor: Actor) -> None:
        """Take a user out of the account; the last owner stays (an account always has someone in charge)."""
        now = self.clock.now()

        def work(conn: Connection) -> None:
            members = store.members(conn, account_id)
            owners = [m for m in members if m.role == "owner"]
            if len(owners) == 1 and owners[0].user_id == user_id:
                raise UserError("user", "the account's last owner cannot leave it", status=409)
            if not store.remove_membership(conn, user_id, account_id):
                raise UserError("user", "not a member of this account", status=404)
            record(
                conn, actor, "user.remove", at=now, account_id=account_id, target=_user_target(conn, user_id)
            )

        await self.db.run(work)

    # -- sessions ----------------------------------------------------------------------------------

    async def start_session(self, user: store.UserRow, *, origin: str) -> NewSession:
        """Sign a user in: a fresh session looking at their first account (if any). `origin` is where
        the user signs in from (the audit log keeps it)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock.now()
        expires = now + SESSION_IDLE

        def work(conn: Connection) -> None:
            accounts = store.memberships(conn, user.id)
            first = accounts[0].account_id if accounts else None
            store.delete_expired_sessions(conn, now)
            store.create_session(conn, _session_id(token), user.id, first, csrf, now, expires)
            actor = Actor.user(user.id, user.email, origin)
            record(conn, actor, "user.sign_in", at=now, account_id=first, target=actor.name)

        await self.db.run(work)
        return NewSession(self._cookies.sign(token).decode(), csrf, expires)

    def _token(self, cookie: str) -> str | None:
        try:
            return self._cookies.unsign(cookie).decode()
        except BadSignature:
            return None

    async def identify(self, cookie: str) -> Identity | None:
        """Who a session cookie belongs to; None for a forged, unknown or expired one."""
        token = self._token(cookie)
        if token is None:
            return None
        session_id = _session_id(token)
        now = self.clock.now()
        return await self.db.run(_identify, session_id, now)

    async def end_session(self, cookie: str) -> None:
        token = self._token(cookie)
        if token is not None:
            await self.db.run(store.delete_session, _session_id(token))

    async def switch_account(self, identity: Identity, account_id: int) -> bool:
        """Look at another of the user's accounts; False when they are no member of it."""
        if not any(m.account_id == account_id for m in identity.memberships):
            return False
        await self.db.run(store.set_session_account, identity.session_id, account_id)
        return True

    async def inspect(self, identity: Identity, account_id: int, *, actor: Actor) -> bool:
        """An operator looks at any account, as a viewer unless they are a member; False for a user who
        is no operator or an account that does not exist."""
        if not identity.user.operator:
            return False
        now = self.clock.now()

        def work(conn: Connection) -> bool:
            account = account_store.get_account(conn, account_id)
            if account is None:
                return False
            store.set_session_account(conn, identity.session_id, account_id)
            record(conn, actor, "account.inspect", at=now, account_id=account_id, target=account.name)
            return True

        return await self.db.run(work)

    async def stop_inspecting(self, identity: Identity) -> None:
        """Back to the operator's own first account (or none)."""
        first = identity.memberships[0].account_id if identity.memberships else None
        await self.db.run(store.set_session_account, identity.session_id, first)

    # -- invitations -------------------------------------------------------------------------------

    async def invite(
        self, account_id: int, email: str, role: str, invited_by: int | None, *, actor: Actor
    ) -> tuple[store.InvitationRow, str]:
        """An invitation and the token of its link (shown once: only its nonce is stored)."""
        email = normalise_email(email)
        check_role(role)
        now = self.clock.now()
        nonce = secrets.token_urlsafe(24)

        def work(conn: Connection) -> store.InvitationRow:
            row = store.create_invitation(
                conn, account_id, email, role, nonce, invited_by, now, now + INVITATION_TTL
            )
            details = {"role": role, "invitation": row.id}
            record(conn, actor, "user.invite", at=now, account_id=account_id, target=email, details=details)
            return row

        row = await self.db.run(work)
        return row, self._invitations.dumps([row.id, nonce])

    def _invitation_token(self, token: str) -> tuple[int, str] | None:
        try:
            found = self._invitations.loads(token, max_age=int(INVITATION_TTL.total_seconds()))
        except BadSignature:  # includes SignatureExpired
            return None
        if not (isinstance(found, list) and len(found) == 2 and isinstance(found[0], int)):
            return None
        return found[0], str(found[1])

    async def invitation(self, token: str) -> tuple[store.InvitationRow, str] | None:
        """An open invitation and its account's name, or None for a bad, used, revoked or expired link."""
        parsed = self._invitation_token(token)
        if parsed is None:
            return None
        row = await self.db.run(store.get_invitation, parsed[0])
        now = self.clock.now()
        if (
            row is None
            or not secrets.compare_digest(row.nonce, parsed[1])
            or row.accepted_at is not None
            or row.revoked_at is not None
            or row.expires_at <= now
        ):
            return None
        account = await self.db.run(account_store.get_account, row.account_id)
        return row, account.name if account else ""

    async def accept(self, token: str, password: str, name: str = "", *, origin: str) -> store.UserRow:
        """Join the invitation's account: a new user with this password, or an existing user of that
        email who proves it with their password. `origin` is where the invitee's request came from."""
        found = await self.invitation(token)
        if found is None:
            raise UserError(
                "invitation", "the link is not valid, was used already or has expired", status=404
            )
        invitation, _ = found
        existing = await self.db.run(store.find_user, invitation.email)
        if existing is not None:
            if await self.authenticate(invitation.email, password) is None:
                raise UserError("password", "this email has a user already: enter its password", status=403)
            password_hash = None
        else:
            password_hash = await asyncio.to_thread(hash_secret, check_password(password))
        clean_name = " ".join(name.split())
        return await self.db.run(_accept, invitation, password_hash, clean_name, self.clock.now(), origin)

    async def revoke_invitation(self, account_id: int, invitation_id: int, *, actor: Actor) -> bool:
        now = self.clock.now()

        def work(conn: Connection) -> bool:
            done = store.revoke_invitation(conn, account_id, invitation_id, now)
            if done:
                target = f"invitation:{invitation_id}"
                record(conn, actor, "user.invitation_revoke", at=now, account_id=account_id, target=target)
            return done

        return await self.db.run(work)


def _create_user(
    conn: Connection,
    email: str,
    name: str,
    password_hash: str,
    operator: bool,
    account_id: int | None,
    role: str | None,
    now: datetime,
    actor: Actor,
) -> store.UserRow:
    if store.find_user(conn, email) is not None:
        raise UserError("email", f"a user with the email {email} exists already", status=409)
    if account_id is not None and account_store.get_account(conn, account_id) is None:
        raise UserError("account", f"no account {account_id}", status=404)
    user = store.create_user(conn, email, name, password_hash, operator, now)
    if account_id is not None and role is not None:
        store.set_membership(conn, user.id, account_id, role, now)
    details = {"operator": operator, "role": role}
    record(
        conn,
        actor,
        "user.create",
        at=now,
        account_id=account_id,
        target=user_name(user.id, email),
        details=details,
    )
    return user


def _user_target(conn: Connection, user_id: int) -> str:
    """How entries name a user: `user:<id>/<email>`, like an actor."""
    user = store.get_user(conn, user_id)
    return user_name(user_id, user.email) if user is not None else f"user:{user_id}"


def _identify(conn: Connection, session_id: str, now: datetime) -> Identity | None:
    session = store.get_session(conn, session_id)
    if session is None or session.expires_at <= now:
        return None
    user = store.get_user(conn, session.user_id)
    if user is None or user.disabled_at is not None:
        return None
    if now - session.last_seen_at >= SESSION_TOUCH:
        expires = min(now + SESSION_IDLE, session.created_at + SESSION_MAX)
        store.touch_session(conn, session_id, now, expires)
    accounts = store.memberships(conn, user.id)
    role = next((m.role for m in accounts if m.account_id == session.account_id), None)
    inspected = None
    if role is None and user.operator and session.account_id is not None:
        account = account_store.get_account(conn, session.account_id)
        if account is not None:
            role, inspected = "viewer", account.name
    account_id = session.account_id if role is not None else None
    return Identity(user, session_id, session.csrf_token, account_id, role, accounts, inspected)


def _accept(
    conn: Connection,
    invitation: store.InvitationRow,
    password_hash: str | None,
    name: str,
    now: datetime,
    origin: str,
) -> store.UserRow:
    if not store.use_invitation(conn, invitation.id, invitation.nonce, now):
        raise UserError("invitation", "the link was used already or has expired", status=404)
    user = store.find_user(conn, invitation.email)
    if user is None:
        assert password_hash is not None
        user = store.create_user(conn, invitation.email, name, password_hash, False, now)
    store.set_membership(conn, user.id, invitation.account_id, invitation.role, now)
    actor = Actor.user(user.id, user.email, origin)
    details = {"role": invitation.role, "invitation": invitation.id}
    target = user_name(user.id, user.email)
    record(conn, actor, "user.join", at=now, account_id=invitation.account_id, target=target, details=details)
    return user
