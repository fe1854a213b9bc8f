"""DKIM keys of sending domains, and which unfinished mail still carries a signature of each."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update

from estafeta.store.models import Delivery, DkimKey, Domain, Message

UNFINISHED = ("queued", "deferred", "held")  # delivery states that may still be sent


@dataclass(frozen=True)
class DkimKeyRow:
    id: int
    domain_id: int
    selector: str
    algorithm: str
    private_key: str
    state: str  # pending | active | retiring | retired
    created_at: datetime
    verified_at: datetime | None
    activated_at: datetime | None
    retiring_at: datetime | None
    retired_at: datetime | None


def _row(row: object) -> DkimKeyRow:
    return DkimKeyRow(
        *(getattr(row, name) for name in DkimKeyRow.__dataclass_fields__)  # same names as the columns
    )


def add_key(
    conn: Connection,
    domain_id: int,
    selector: str,
    algorithm: str,
    private_key: str,
    state: str,
    now: datetime,
) -> DkimKeyRow:
    active = now if state == "active" else None
    values = {
        "domain_id": domain_id,
        "selector": selector,
        "algorithm": algorithm,
        "private_key": private_key,
        "state": state,
        "created_at": now,
        "verified_at": None,
        "activated_at": active,
        "retiring_at": None,
        "retired_at": None,
    }
    new_id = conn.execute(insert(DkimKey).values(**values).returning(DkimKey.id)).scalar_one()
    return DkimKeyRow(id=new_id, **values)  # type: ignore[arg-type]


def keys_of(conn: Connection, domain_ids: Iterable[int]) -> dict[int, list[DkimKeyRow]]:
    """Every key of these domains, oldest first, by domain id."""
    found: dict[int, list[DkimKeyRow]] = {}
    ids = list(domain_ids)
    if not ids:
        return found
    query = select(DkimKey).where(DkimKey.domain_id.in_(ids)).order_by(DkimKey.id)
    for row in conn.execute(query).all():
        found.setdefault(row.domain_id, []).append(_row(row))
    return found


def keys_in(conn: Connection, states: Iterable[str]) -> list[tuple[str, DkimKeyRow]]:
    """(domain name, key) of every key in one of `states`, for the scheduled key check."""
    query = (
        select(Domain.name, DkimKey)
        .join(Domain, Domain.id == DkimKey.domain_id)
        .where(DkimKey.state.in_(list(states)))
        .order_by(DkimKey.id)
    )
    return [(row.name, _row(row)) for row in conn.execute(query).all()]


def set_state(conn: Connection, key_id: int, state: str, now: datetime, *, expected: str) -> bool:
    """Move a key from `expected` to `state`, stamping when; False if another process moved it first."""
    stamps = {
        "active": {"verified_at": now, "activated_at": now},
        "retiring": {"retiring_at": now},
        "retired": {"retired_at": now},
    }[state]
    result = conn.execute(
        update(DkimKey).where(DkimKey.id == key_id, DkimKey.state == expected).values(state=state, **stamps)
    )
    return result.rowcount == 1


def unfinished_signed_with(conn: Connection, key_id: int) -> int:
    """How many deliveries that may still be sent carry a signature made with the key."""
    query = (
        select(func.count())
        .select_from(Delivery)
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.state.in_(UNFINISHED), Message.dkim_keys.contains(f" {key_id} "))
    )
    return int(conn.execute(query).scalar_one())
