"""The event loop long-running work runs on: uvloop's, whose sockets, timers and TLS are compiled code.

Every process of the platform (`estafeta serve` and its front and delivery children), the simulated
internet and the benchmarks' own processes start their work through `run`, so that the relay's TLS
sessions and every socket write cost a fraction of what asyncio's pure-Python loop spends on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a new uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
