"""Reliability fixtures: one simulated internet per session (reset per test), without rate limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estafeta.world import World, WorldThread


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    with WorldThread(World(gmail_rate_limit=0)) as running:
        yield running


@pytest.fixture
def fresh_world(world: World) -> World:
    world.reset()
    return world
