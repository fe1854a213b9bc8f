"""Recording attempt outcomes: group commits that each sender waits for before its next transaction.

A receiver's 250 is only safe once the outcome is committed: until then a crash sends the message again
when its lease runs out. So a sender waits for its outcome's commit before it starts another transaction
on its connection: at most one acknowledged delivery per connection is ever unrecorded, the one whose
reply was just read. Outcomes that arrive while commits are running go together into the next one (group
commit), so the wait costs about one commit, never a commit per message nor a timer.

One commit runs at a time, on PostgreSQL too: with two at once the groups were smaller, and their extra
commits cost more CPU, the database server's above all, than the shorter waits gained (measured in
`docs/benchmarks.md`). A failed commit is tried again with growing pauses, and its senders keep
waiting, so a database outage slows delivery down instead of piling up unrecorded 250s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from estafeta.metrics import CommitWindow
from estafeta.outcome import AttemptResult
from estafeta.queue import Queue

log = logging.getLogger("estafeta.delivery")

MAX_BATCH = 500
RETRY_PAUSE = 0.2
MAX_RETRY_PAUSE = 10.0


@dataclass
class _Waiting:
    result: AttemptResult
    replied_at: float  # time.monotonic() when the reply was read
    committed: asyncio.Future[None]


class OutcomeRecorder:
    """Commits outcomes in groups as they come; `record` returns once its outcome is committed."""

    def __init__(self, queue: Queue, window: CommitWindow) -> None:
        self.queue = queue
        self.window = window
        self._pending: list[_Waiting] = []
        self._commits: set[asyncio.Task[None]] = set()

    async def record(self, result: AttemptResult, replied_at: float) -> None:
        """Commit `result` (with whatever else is waiting). A cancelled caller does not cancel the commit."""
        waiting = _Waiting(result, replied_at, asyncio.get_running_loop().create_future())
        if result.delivered:
            self.window.acknowledged()
        self._pending.append(waiting)
        self._start()
        await asyncio.shield(waiting.committed)

    def _start(self) -> None:
        if self._pending and not self._commits:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            task = asyncio.create_task(self._commit(batch), name="delivery-outcomes")
            self._commits.add(task)
            task.add_done_callback(self._committed)

    def _committed(self, task: asyncio.Task[None]) -> None:
        self._commits.discard(task)
        self._start()

    async def _commit(self, batch: list[_Waiting]) -> None:
        pause = RETRY_PAUSE
        while True:
            try:
                await self.queue.finish([w.result for w in batch])
                break
            except Exception:
                log.exception("recording %d outcomes failed; trying again in %.1fs", len(batch), pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE)
        now = time.monotonic()
        for waiting in batch:
            self.window.committed(now - waiting.replied_at, waiting.result.delivered)
            if not waiting.committed.done():
                waiting.committed.set_result(None)

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every outcome handed in to be committed; False if some were
        not (the database is unreachable): their entries are tried again when their leases expire."""
        deadline = time.monotonic() + timeout
        while self._commits:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait(set(self._commits), timeout=left)
        if not self._commits:
            return True
        self._pending.clear()
        unfinished = set(self._commits)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        return False
