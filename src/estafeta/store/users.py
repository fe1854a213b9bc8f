"""Dashboard users, their memberships in accounts, their sessions and invitations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from estafeta.store.models import Account, Invitation, Membership, User, WebSession


@dataclass(frozen=True)
class UserRow:
    id: int
    email: str
    name: str
    password_hash: str
    operator: bool
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class MembershipRow:
    account_id: int
    account_name: str
    role: str


@dataclass(frozen=True)
class MemberRow:
    user_id: int
    email: str
    name: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class SessionRow:
    id: str
    user_id: int
    account_id: int | None
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class InvitationRow:
    id: int
    account_id: int
    email: str
    role: str
    nonce: str
    invited_by: int | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


def _user(r: object) -> UserRow:
    return UserRow(
        r.id,  # type: ignore[attr-defined]
        r.email,  # type: ignore[attr-defined]
        r.name,  # type: ignore[attr-defined]
        r.password_hash,  # type: ignore[attr-defined]
        r.operator,  # type: ignore[attr-defined]
        r.created_at,  # type: ignore[attr-defined]
        r.disabled_at,  # type: ignore[attr-defined]
    )


def create_user(
    conn: Connection, email: str, name: str, password_hash: str, operator: bool, now: datetime
) -> UserRow:
    new_id = conn.execute(
        insert(User)
        .values(
            email=email,
            email_key=email.lower(),
            name=name,
            password_hash=password_hash,
            operator=operator,
            created_at=now,
        )
        .returning(User.id)
    ).scalar_one()
    return UserRow(new_id, email, name, password_hash, operator, now, None)


def find_user(conn: Connection, email: str) -> UserRow | None:
    row = conn.execute(select(User).where(User.email_key == email.lower())).first()
    return _user(row) if row else None


def get_user(conn: Connection, user_id: int) -> UserRow | None:
    row = conn.execute(select(User).where(User.id == user_id)).first()
    return _user(row) if row else None


def list_users(conn: Connection) -> list[UserRow]:
    return [_user(r) for r in conn.execute(select(User).order_by(User.id)).all()]


def set_password(conn: Connection, user_id: int, password_hash: str) -> None:
    conn.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


def set_operator(conn: Connection, user_id: int, operator: bool) -> None:
    conn.execute(update(User).where(User.id == user_id).values(operator=operator))


def set_membership(conn: Connection, user_id: int, account_id: int, role: str, now: datetime) -> None:
    """Give the user this role in the account (replacing any role it had there)."""
    conn.execute(delete(Membership).where(Membership.user_id == user_id, Membership.account_id == account_id))
    conn.execute(insert(Membership).values(user_id=user_id, account_id=account_id, role=role, created_at=now))


def remove_membership(conn: Connection, user_id: int, account_id: int) -> bool:
    result = conn.execute(
        delete(Membership).where(Membership.user_id == user_id, Membership.account_id == account_id)
    )
    return result.rowcount == 1


def memberships(conn: Connection, user_id: int) -> list[MembershipRow]:
    rows = conn.execute(
        select(Membership.account_id, Account.name, Membership.role)
        .join(Account, Account.id == Membership.account_id)
        .where(Membership.user_id == user_id)
        .order_by(Account.name)
    ).all()
    return [MembershipRow(r.account_id, r.name, r.role) for r in rows]


def members(conn: Connection, account_id: int) -> list[MemberRow]:
    rows = conn.execute(
        select(User.id, User.email, User.name, Membership.role, Membership.created_at)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.account_id == account_id)
        .order_by(User.email_key)
    ).all()
    return [MemberRow(r.id, r.email, r.name, r.role, r.created_at) for r in rows]


# -- sessions ----------------------------------------------------------------------------------------


def _session(r: object) -> SessionRow:
    return SessionRow(
        r.id,  # type: ignore[attr-defined]
        r.user_id,  # type: ignore[attr-defined]
        r.account_id,  # type: ignore[attr-defined]
        r.csrf_token,  # type: ignore[attr-defined]
        r.created_at,  # type: ignore[attr-defined]
        r.expires_at,  # type: ignore[attr-defined]
        r.last_seen_at,  # type: ignore[attr-defined]
    )


def create_session(
    conn: Connection,
    session_id: str,
    user_id: int,
    account_id: int | None,
    csrf_token: str,
    now: datetime,
    expires_at: datetime,
) -> SessionRow:
    conn.execute(
        insert(WebSession).values(
            id=session_id,
            user_id=user_id,
            account_id=account_id,
            csrf_token=csrf_token,
            created_at=now,
            expires_at=expires_at,
            last_seen_at=now,
        )
    )
    return SessionRow(session_id, user_id, account_id, csrf_token, now, expires_at, now)


def get_session(conn: Connection, session_id: str) -> SessionRow | None:
    row = conn.execute(select(WebSession).where(WebSession.id == session_id)).first()
    return _session(row) if row else None


def touch_session(conn: Connection, session_id: str, now: datetime, expires_at: datetime) -> None:
    conn.execute(
        update(WebSession).where(WebSession.id == session_id).values(last_seen_at=now, expires_at=expires_at)
    )


def set_session_account(conn: Connection, session_id: str, account_id: int | None) -> None:
    conn.execute(update(WebSession).where(WebSession.id == session_id).values(account_id=account_id))


def delete_session(conn: Connection, session_id: str) -> None:
    conn.execute(delete(WebSession).where(WebSession.id == session_id))


def delete_user_sessions(conn: Connection, user_id: int) -> None:
    conn.execute(delete(WebSession).where(WebSession.user_id == user_id))


def delete_expired_sessions(conn: Connection, now: datetime) -> int:
    return conn.execute(delete(WebSession).where(WebSession.expires_at <= now)).rowcount


# -- invitations -------------------------------------------------------------------------------------


def _invitation(r: object) -> InvitationRow:
    return InvitationRow(
        r.id,  # type: ignore[attr-defined]
        r.account_id,  # type: ignore[attr-defined]
        r.email,  # type: ignore[attr-defined]
        r.role,  # type: ignore[attr-defined]
        r.nonce,  # type: ignore[attr-defined]
        r.invited_by,  # type: ignore[attr-defined]
        r.created_at,  # type: ignore[attr-defined]
        r.expires_at,  # type: ignore[attr-defined]
        r.accepted_at,  # type: ignore[attr-defined]
        r.revoked_at,  # type: ignore[attr-defined]
    )


def create_invitation(
    conn: Connection,
    account_id: int,
    email: str,
    role: str,
    nonce: str,
    invited_by: int | None,
    now: datetime,
    expires_at: datetime,
) -> InvitationRow:
    new_id = conn.execute(
        insert(Invitation)
        .values(
            account_id=account_id,
            email=email,
            role=role,
            nonce=nonce,
            invited_by=invited_by,
            created_at=now,
            expires_at=expires_at,
        )
        .returning(Invitation.id)
    ).scalar_one()
    return InvitationRow(new_id, account_id, email, role, nonce, invited_by, now, expires_at, None, None)


def get_invitation(conn: Connection, invitation_id: int) -> InvitationRow | None:
    row = conn.execute(select(Invitation).where(Invitation.id == invitation_id)).first()
    return _invitation(row) if row else None


def list_invitations(conn: Connection, account_id: int) -> list[InvitationRow]:
    rows = conn.execute(
        select(Invitation).where(Invitation.account_id == account_id).order_by(Invitation.id.desc())
    ).all()
    return [_invitation(r) for r in rows]


def use_invitation(conn: Connection, invitation_id: int, nonce: str, now: datetime) -> bool:
    """Mark an open invitation accepted; False when it was used, revoked or has expired (one use only)."""
    result = conn.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation_id,
            Invitation.nonce == nonce,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
        .values(accepted_at=now)
    )
    return result.rowcount == 1


def revoke_invitation(conn: Connection, account_id: int, invitation_id: int, now: datetime) -> bool:
    result = conn.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation_id,
            Invitation.account_id == account_id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return result.rowcount == 1
