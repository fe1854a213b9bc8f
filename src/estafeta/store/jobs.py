"""Rounds of the scheduler's jobs: which round of each job has been taken, by whichever node took it."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from estafeta.store.models import PlatformState

_WIDTH = 20  # rounds are stored zero-padded, so that comparing the text compares the numbers


def take_round(conn: Connection, job: str, round_no: int) -> bool:
    """Mark round `round_no` of `job` as taken; False when it (or a later one) was taken already.

    One conditional update (or the first insert), so two nodes asking at once cannot both get True."""
    key, value = f"job:{job}"[:64], str(round_no).zfill(_WIDTH)
    taken = conn.execute(
        update(PlatformState).where(PlatformState.key == key, PlatformState.value < value).values(value=value)
    ).rowcount
    if taken:
        return True
    if conn.scalar(select(PlatformState.key).where(PlatformState.key == key)) is not None:
        return False  # this round or a later one is taken
    try:
        with conn.begin_nested():
            conn.execute(insert(PlatformState).values(key=key, value=value))
    except IntegrityError:  # another node inserted it first
        return False
    return True
