"""`estafeta bench crash` (and the crash test): mail through `estafeta serve` while its whole process
group is killed with SIGKILL at random moments, restarted each time, then drained.

Nothing accepted may be lost, and only a delivery in flight at a kill may be sent twice: one whose 250
the platform may not have recorded when it died. The receivers' ledger (`estafeta.world.ledger`) says,
from the receiving side, which deliveries were in flight at each kill; every duplicate copy must be one
of them. Before each kill the platform's `/metrics` is read for its own count of acknowledged deliveries
not yet committed and the time from reply to commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from estafeta.audit import SYSTEM
from estafeta.bench.resources import scratch_schema
from estafeta.core import Core
from estafeta.sandbox import sandbox_settings
from estafeta.store import queue as queue_store
from estafeta.store.db import Database
from estafeta.world import World, WorldThread
from estafeta.world.ledger import LedgerView

PROVIDERS = ("yahoo.test", "outlook.test", "nomx.test")  # they accept every plain recipient
CHUNK = 50  # messages per API request
POSTERS = 2
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
STALL_TIMEOUT = 60.0
UNCOMMITTED = "estafeta_delivery_acknowledged_uncommitted"
UNCOMMITTED_PEAK = "estafeta_delivery_acknowledged_uncommitted_peak"
REPLY_TO_COMMIT = "estafeta_delivery_reply_to_commit_seconds"


@dataclass(frozen=True)
class Kill:
    at: float  # time.monotonic() of the SIGKILL
    in_flight: int  # deliveries in flight then, by the receivers' ledger
    uncommitted: float | None  # acknowledged but uncommitted by the platform's /metrics, just before


@dataclass
class CommitStats:
    """The reply-to-commit histogram summed over the platform's lifetimes (each kill starts a new one)."""

    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    peak: float = 0.0

    def add(self, text: str) -> float | None:
        """Add one scrape of /metrics; returns the current acknowledged-but-uncommitted count."""
        current: float | None = None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == UNCOMMITTED:
                    current = (current or 0.0) + sample.value
                elif sample.name == UNCOMMITTED_PEAK:
                    self.peak = max(self.peak, sample.value)
                elif sample.name == f"{REPLY_TO_COMMIT}_count":
                    self.count += sample.value
                elif sample.name == f"{REPLY_TO_COMMIT}_sum":
                    self.total += sample.value
                elif sample.name == f"{REPLY_TO_COMMIT}_bucket":
                    bound = float(sample.labels["le"])
                    self.buckets[bound] = self.buckets.get(bound, 0.0) + sample.value
        return current

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (seconds)."""
        if not self.count:
            return None
        for bound in sorted(self.buckets):
            if self.buckets[bound] >= q * self.count:
                return bound
        return None


@dataclass
class CrashResult:
    backend: str
    processes: int
    accepted: set[str]
    cut_off: set[str]  # submitted when a kill cut the request off: delivered at most once, or not at all
    kills: list[Kill]
    copies: dict[str, int]  # recipient -> copies the receivers acknowledged
    unexplained: dict[str, int]  # recipient -> copies beyond the first that no kill accounts for
    wrong_states: dict[str, int]  # final queue states other than delivered
    commits: CommitStats
    seconds: float

    @property
    def lost(self) -> set[str]:
        return {r for r in self.accepted if not self.copies.get(r)}

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.copies.values() if n > 1)

    @property
    def in_flight(self) -> int:
        return sum(k.in_flight for k in self.kills)

    def summary(self) -> dict[str, Any]:
        delivered = sum(self.copies.values())
        known = [k.uncommitted for k in self.kills if k.uncommitted is not None]
        mean = self.commits.total / self.commits.count if self.commits.count else None
        p99 = self.commits.quantile(0.99)
        return {
            "backend": self.backend,
            "delivery_processes": self.processes,
            "messages_accepted": len(self.accepted),
            "submissions_cut_off": len(self.cut_off),
            "kills": len(self.kills),
            "lost": len(self.lost),
            "copies_received": delivered,
            "duplicates": self.duplicates,
            "duplicates_not_in_flight": sum(self.unexplained.values()),
            "in_flight_at_kills": self.in_flight,
            "uncommitted_at_kills": sum(known) if known else "n/a",
            "uncommitted_peak": self.commits.peak if self.commits.count else "n/a",
            "reply_to_commit_mean_ms": round(mean * 1000, 2) if mean is not None else "n/a",
            "reply_to_commit_p99_ms_at_most": round(p99 * 1000, 1) if p99 is not None else "n/a",
            "duplicates_per_kill": round(self.duplicates / len(self.kills), 2) if self.kills else 0.0,
            "duplicates_per_1000_kills": round(1000 * self.duplicates / len(self.kills)) if self.kills else 0,
            "duplicates_per_1000_messages": round(1000 * self.duplicates / max(delivered, 1), 2),
            "final_states_not_delivered": sum(self.wrong_states.values()),
            "seconds": round(self.seconds, 1),
        }


class Serve:
    """`estafeta serve` in a process group of its own, so that one signal reaches all its processes."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        log = self.workdir / f"serve-{self.starts}.log"
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "estafeta", "serve", "--config", str(self.config)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        marker = "serving API on "
        while True:
            text = log.read_text(errors="replace")
            if marker in text:
                self.url = text.split(marker, 1)[1].split('"', 1)[0]
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"estafeta serve did not start:\n{text[-3000:]}")
            await asyncio.sleep(0.05)

    def kill(self) -> float:
        """SIGKILL the whole process group; returns when it was sent (monotonic)."""
        assert self.process is not None
        at = time.monotonic()
        os.killpg(self.process.pid, signal.SIGKILL)
        return at

    async def wait(self) -> None:
        assert self.process is not None
        await asyncio.to_thread(self.process.wait)
        self.url = ""

    async def stop(self) -> None:
        """SIGTERM (a clean stop), then SIGKILL to the group if it takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.to_thread(self.process.wait)
        with contextlib.suppress(ProcessLookupError):  # no delivery child may outlive the front
            os.killpg(self.process.pid, signal.SIGKILL)


def _config(database_url: str, world: World, processes: int, lease_seconds: float) -> str:
    host, port = world.dns_address
    return (
        f'database_url = "{database_url}"\nhostname = "mta.estafeta.test"\n'
        f'return_path_domain = "bounces.estafeta.test"\ndns_servers = ["{host}:{port}"]\n'
        '[api]\nhost = "127.0.0.1"\nport = 0\n'
        f"[delivery]\nsmtp_port = {world.smtp_port}\nprocesses = {processes}\n"
        f"lease_seconds = {lease_seconds}\npoll_interval = 0.05\nidle_timeout = 1.0\n"
        "retry_schedule = [1.0]\n"
        "[smtp]\nenabled = false\n[warmup]\ntiers = []\n"
    )


async def _prepare(database_url: str, world: World) -> str:
    """An account with a sending domain (its records published in the world, verified) and an API key."""
    setup = Core(sandbox_settings(database_url, world.dns_address, world.smtp_port))
    try:
        account = await setup.accounts.create("crash", actor=SYSTEM)
        await setup.domains.add(account.id, "crash.test", actor=SYSTEM)
        token = (await setup.api_keys.create(account.id, "crash", actor=SYSTEM)).token
    finally:
        setup.close()
    return token


class _Submitter:
    """Posts messages (one fresh recipient each) until `target` are accepted, across restarts."""

    def __init__(self, serve: Serve, token: str, target: int, up: asyncio.Event) -> None:
        self.serve = serve
        self.token = token
        self.target = target
        self.up = up
        self.accepted: set[str] = set()
        self.cut_off: set[str] = set()
        self._next = 0
        self._posting = 0  # recipients in requests under way

    def _chunk(self) -> list[str]:
        size = max(0, min(CHUNK, self.target - len(self.accepted) - self._posting))
        first, self._next = self._next, self._next + size
        return [f"c{i}@{PROVIDERS[i % len(PROVIDERS)]}" for i in range(first, first + size)]

    async def run(self) -> None:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=60) as client:

            async def poster() -> None:
                while len(self.accepted) < self.target:
                    await self.up.wait()
                    url = self.serve.url
                    chunk = self._chunk()
                    if not chunk:
                        return
                    self._posting += len(chunk)
                    body = {
                        "messages": [
                            {"from": "Crash <crash@crash.test>", "to": [r], "subject": r, "text": "hi\n"}
                            for r in chunk
                        ]
                    }
                    try:
                        response = await client.post(f"{url}/v1/messages", json=body)
                    except httpx.TransportError:
                        self._posting -= len(chunk)
                        self.cut_off.update(chunk)  # the kill came first: accepted or not, nobody knows
                        await asyncio.sleep(0.05)
                        continue
                    self._posting -= len(chunk)
                    if response.status_code != 202:
                        raise RuntimeError(f"the API refused a batch: {response.status_code} {response.text}")
                    self.accepted.update(chunk)

            await asyncio.gather(*(poster() for _ in range(POSTERS)))


async def _scrape(url: str) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{url}/metrics")
    except httpx.TransportError:
        return None
    return response.text if response.status_code == 200 else None


def _verdict(view: LedgerView, kills: list[Kill], wanted: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Copies per recipient, and per recipient the copies beyond the first that were not in flight at a
    kill (a copy in flight when the sender died may go out again; any other may not)."""
    in_flight = {(a.session, a.began) for k in kills for a in view.in_flight(k.at)}
    copies: dict[str, int] = {}
    unexplained: dict[str, int] = {}
    for recipient, acks in view.copies().items():
        if recipient not in wanted:
            continue
        copies[recipient] = len(acks)
        covered = sum(1 for a in acks[:-1] if (a.session, a.began) in in_flight)
        if len(acks) - 1 > covered:
            unexplained[recipient] = len(acks) - 1 - covered
    return copies, unexplained


async def _until_acknowledged(
    acknowledged: Callable[[], int],
    target: int,
    posting: asyncio.Task[None],
    tell: Callable[[str, int], None],
    accepted: Callable[[], int],
) -> None:
    """Wait until the receivers have acknowledged `target` copies; fail if delivery stalls."""
    last, since = acknowledged(), time.monotonic()
    while (now := acknowledged()) < target:
        if posting.done() and posting.exception() is not None:
            posting.result()  # an error in submitting ends the run
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > STALL_TIMEOUT:
            raise RuntimeError(f"no delivery for {STALL_TIMEOUT:.0f}s at {now} of {target} copies")
        tell("acknowledged", now)
        tell("accepted", accepted())
        await asyncio.sleep(0.005)


async def run_crash(
    *,
    world: World,
    database_url: str,
    workdir: Path,
    messages: int,
    kills: int,
    processes: int = 0,
    lease_seconds: float = 3.0,
    seed: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> CrashResult:
    """Send `messages` through `estafeta serve` on `database_url`, SIGKILLing its process group `kills`
    times at random moments while it delivers into `world`, then drain; `progress(what, n)` is told of
    accepted messages, acknowledged copies and kills."""
    rng = random.Random(seed)
    tell = progress or (lambda what, n: None)
    token = await _prepare(database_url, world)
    config = workdir / "estafeta.toml"
    config.write_text(_config(database_url, world, processes, lease_seconds))
    serve = Serve(config, workdir)
    up = asyncio.Event()
    submitter = _Submitter(serve, token, messages, up)
    commits = CommitStats()
    done: list[Kill] = []
    started = time.monotonic()
    db = Database(database_url)

    def acknowledged() -> int:
        return world.acknowledged()

    async def scrape() -> float | None:
        text = await _scrape(serve.url)
        return commits.add(text) if text is not None else None

    await serve.start()
    up.set()
    posting = asyncio.create_task(submitter.run())
    try:
        # Kill points spread over the run, counted in acknowledged copies, jittered by a few ms so that a
        # kill falls anywhere in an SMTP transaction or a commit.
        points = sorted(rng.sample(range(messages // 10, messages * 9 // 10), kills))
        floor = max(1, messages // (4 * (kills + 1)))  # deliveries after each restart before the next kill
        for point in points:
            target = min(max(point, acknowledged() + floor), messages)
            await _until_acknowledged(acknowledged, target, posting, tell, lambda: len(submitter.accepted))
            await asyncio.sleep(rng.uniform(0, 0.02))
            uncommitted = await scrape()
            up.clear()
            at = serve.kill()
            await serve.wait()
            done.append(Kill(at, 0, uncommitted))
            tell("kills", len(done))
            await serve.start()
            up.set()
        await posting
        deadline = time.monotonic() + 120 + messages / 20 + lease_seconds
        while True:
            tell("acknowledged", acknowledged())
            tell("accepted", len(submitter.accepted))
            states = await db.run(queue_store.state_counts)
            delivered_all = submitter.accepted <= set(world.ledger().copies())
            if delivered_all and not states.get("queued") and not states.get("deferred"):
                break
            if time.monotonic() > deadline:
                break  # the verdict reports what is missing
            await asyncio.sleep(0.25)
        await scrape()
    finally:
        posting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await posting
        await serve.stop()
    states = await db.run(queue_store.state_counts)
    db.close()
    view = world.ledger()
    kills_seen = [Kill(k.at, len(view.in_flight(k.at)), k.uncommitted) for k in done]
    copies, unexplained = _verdict(view, kills_seen, submitter.accepted | submitter.cut_off)
    return CrashResult(
        backend=make_url(database_url).get_backend_name(),
        processes=processes,
        accepted=submitter.accepted,
        cut_off=submitter.cut_off - submitter.accepted,
        kills=kills_seen,
        copies=copies,
        unexplained=unexplained,
        wrong_states={s: n for s, n in states.items() if s != "delivered"},
        commits=commits,
        seconds=time.monotonic() - started,
    )


async def run_crash_bench(
    *,
    backends: list[str],
    postgresql_url: str,
    messages: int,
    kills: int,
    processes: int,
    lease_seconds: float,
    seed: int | None,
    console: Console,
) -> dict[str, dict[str, Any]]:
    """One crash run per backend ("sqlite", "postgresql") against one simulated internet."""
    results: dict[str, dict[str, Any]] = {}
    world_thread = WorldThread(World(gmail_rate_limit=0))
    with world_thread as world, tempfile.TemporaryDirectory(prefix="estafeta-") as tmp:
        for backend in backends:
            workdir = Path(tmp) / backend
            workdir.mkdir()
            columns = (
                TextColumn("{task.description:<13}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as bar, contextlib.ExitStack() as stack:
                tasks = {
                    "accepted": bar.add_task(f"{backend} accepted", total=messages),
                    "acknowledged": bar.add_task("acknowledged", total=messages),
                    "kills": bar.add_task("kills", total=kills),
                }

                def tell(what: str, n: int, bar: Progress = bar, tasks: dict[str, Any] = tasks) -> None:
                    bar.update(tasks[what], completed=n)

                if backend == "sqlite":
                    url = f"sqlite:///{workdir / 'crash.db'}"
                else:
                    url = stack.enter_context(scratch_schema(postgresql_url, prefix="crash"))
                world.reset()
                result = await run_crash(
                    world=world,
                    database_url=url,
                    workdir=workdir,
                    messages=messages,
                    kills=kills,
                    processes=processes,
                    lease_seconds=lease_seconds,
                    seed=seed,
                    progress=tell,
                )
            results[backend] = result.summary()
    return results
