"""End-to-end fixtures: one simulated internet per session (reset per test), a platform per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from estafeta.world import World, WorldThread
from tests.e2e.dashboard_support import ARTIFACTS, Served, serve_demo
from tests.e2e.harness import Harness, start_harness


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The relay's tests run on uvloop's event loop, as the relay does under `estafeta serve` (its STARTTLS
    goes through the loop's own TLS); the others on asyncio's."""
    if item.path.name.startswith("test_smtp"):
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    with WorldThread(World()) as running:
        yield running


@pytest.fixture
def fresh_world(world: World) -> World:
    world.reset()
    return world


@pytest.fixture
async def harness(fresh_world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    h = await start_harness(fresh_world, f"sqlite:///{tmp_path / 'e2e.db'}")
    yield h
    await h.client.aclose()
    await h.platform.stop(grace=2)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, world: World) -> Iterator[Served]:
    """One platform filled by the demo for every dashboard module of the session."""
    for old in ARTIFACTS.glob("*.png"):  # this run's screenshots only
        old.unlink()
    yield from serve_demo(tmp_path_factory.mktemp("dashboard-demo"), world.dns_address)
