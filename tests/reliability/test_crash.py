"""Crashes: `estafeta serve` (its whole process group) killed with SIGKILL while it delivers, restarted,
drained. Nothing accepted is lost; a message goes out twice only if it was in flight at a kill, as the
receivers' ledger shows; the platform's /metrics reported its window of acknowledged, uncommitted mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from estafeta.bench.crash import run_crash
from estafeta.world import World

MESSAGES = 300
KILLS = 3


@pytest.mark.parametrize(
    ("backend", "processes"),
    [("sqlite", 0), ("postgresql", 1)],
    ids=["sqlite", "postgresql-delivery-process"],
)
async def test_sigkill_loses_nothing_and_resends_only_what_was_in_flight(
    fresh_world: World, tmp_path: Path, request: pytest.FixtureRequest, backend: str, processes: int
) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    result = await run_crash(
        world=fresh_world,
        database_url=url,
        workdir=tmp_path,
        messages=MESSAGES,
        kills=KILLS,
        processes=processes,
        seed=13,
    )
    assert len(result.accepted) == MESSAGES and len(result.kills) == KILLS
    assert result.lost == set()
    assert result.wrong_states == {}  # every accepted message ended delivered, none bounced or waiting
    # Every copy beyond the first was in flight at a kill, so duplicates never exceed what was in flight.
    assert result.unexplained == {}
    assert result.duplicates <= result.in_flight
    # The platform measured its window and exposed it on /metrics before each kill.
    assert all(kill.uncommitted is not None for kill in result.kills)
    assert result.commits.count > 0
