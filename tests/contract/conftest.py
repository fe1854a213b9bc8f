"""A live platform for the contract fuzzer: the real API on loopback, a real database, real keys.

The fuzzer's requests are synchronous (schemathesis sends them with `requests`), so the platform and its
simulated internet run on an event loop of their own in a background thread for the whole module.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from estafeta.audit import SYSTEM
from estafeta.world import World
from tests.e2e.harness import Harness, start_harness

T = TypeVar("T")
TIMEOUT = 60.0


class LoopThread:
    """An event loop running on a daemon thread; `run` waits for a coroutine scheduled on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="contract-platform", daemon=True)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


@dataclass(frozen=True)
class LiveApi:
    url: str
    account_key: str
    admin_key: str
    harness: Harness
    loop: LoopThread
    statuses: list[int] = field(default_factory=list)  # of the fuzzer's answers, for a sanity check


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    database = f"sqlite:///{tmp_path_factory.mktemp('contract') / 'contract.db'}"
    with LoopThread() as loop:
        world = World()
        loop.run(world.start())
        harness = loop.run(start_harness(world, database))
        admin_key = loop.run(harness.platform.core.admin_keys.create("contract", actor=SYSTEM)).token
        try:
            yield LiveApi(harness.platform.api_url, harness.token, admin_key, harness, loop)
        finally:
            loop.run(harness.client.aclose())
            loop.run(harness.platform.stop(grace=2))
            loop.run(world.stop())
