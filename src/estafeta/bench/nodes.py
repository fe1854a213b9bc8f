"""Nodes for benchmarks and cluster tests: `estafeta serve` processes sharing one database (and one Redis).

A benchmark's platform runs as operators run it: each node is `python -m estafeta serve --role all` in a
process group of its own, with its front children and delivery children, configured through `ESTAFETA_*`
variables and listening on ports of its own on 127.0.0.1 (each asks for free ports and logs them). One
node is the single-machine platform; several share the queue through the database, and their limits
through Redis. CPU time and memory are read over each node's whole process tree; how many messages each
node delivered comes from its `/metrics`, which adds up its delivery children's counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from estafeta.bench.resources import end_with_parent, postgresql_server_pid, tree_cpu_seconds
from estafeta.config import Settings

START_TIMEOUT = 240.0  # several Python servers starting at once on a loaded machine
STOP_TIMEOUT = 60.0
COUNTS_TIMEOUT = 10.0  # seconds for delivery children's last counts to reach their node's /metrics
MAX_NODES = 8
DELIVERED = re.compile(r'^estafeta_delivery_attempts_total\{outcome="delivered"\} (\S+)$', re.M)
RELAY = re.compile(r"SMTP relay on \S+ ports (\d+) \(STARTTLS\)")


def node_environment(settings: Settings) -> dict[str, str]:
    """This process's environment without its `ESTAFETA_*` variables, plus `settings` as `ESTAFETA_*`
    variables (only what was set explicitly; the rest keeps its defaults in the node too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESTAFETA_")}
    for key, value in settings.model_dump(mode="json", exclude_unset=True).items():
        env[f"ESTAFETA_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


@dataclass
class ServeNode:
    """One `estafeta serve` process (its log in a file) and the addresses it said it serves."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""  # the API
    relay_port: int | None = None  # the relay's STARTTLS port, when it runs

    @classmethod
    def start(cls, name: str, env: dict[str, str], directory: Path) -> ServeNode:
        log = directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "estafeta", "serve", "--role", "all"],
                env=env,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
                process_group=0,  # one signal reaches the node's children too
                preexec_fn=end_with_parent,
            )
        return cls(name, process, log)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def ready(self) -> bool:
        """Whether the node serves (its last start-up line, on delivery, was logged); raises if it exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n" + "\n".join(self.lines()[-20:]))
        for line in self.lines():
            message = _message(line)
            if message.startswith("serving API on "):
                self.url = message.removeprefix("serving API on ")
            elif found := RELAY.match(message):
                self.relay_port = int(found.group(1))
            elif message.startswith("delivering from "):
                return bool(self.url)
        return False

    def delivered(self) -> int:
        """Deliveries this node made so far (its Prometheus counter)."""
        return _delivered(httpx.get(f"{self.url}/metrics", timeout=60).text)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the serve process: a clean stop (it stops its children, work under way finishes);
        any other signal (SIGKILL) goes to the whole node at once. The node's process group is killed if
        it takes longer than `timeout`, and afterwards, so that no child outlives its node."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGTERM:
                    os.kill(self.process.pid, sig)
                else:
                    os.killpg(self.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _message(line: str) -> str:
    with contextlib.suppress(ValueError):
        entry = json.loads(line)
        if isinstance(entry, dict):
            return str(entry.get("message", ""))
    return ""


def _delivered(metrics: str) -> int:
    found = DELIVERED.search(metrics)
    return int(float(found.group(1))) if found else 0


def wait_until_ready(nodes: list[ServeNode], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while not node.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} did not start:\n" + "\n".join(node.lines()[-20:]))
            time.sleep(0.1)


class Nodes:
    """`count` nodes on `settings`, started together; an async context manager for benchmarks."""

    def __init__(self, settings: Settings, count: int, directory: Path) -> None:
        if not 1 <= count <= MAX_NODES:
            raise ValueError(f"1 to {MAX_NODES} nodes")
        self.settings = settings
        self.count = count
        self.directory = directory
        self.nodes: list[ServeNode] = []
        self._database_pid: int | None = None

    async def __aenter__(self) -> Nodes:
        env = node_environment(self.settings)
        url = self.settings.database_url
        if not url.startswith("sqlite"):
            self._database_pid = await asyncio.to_thread(postgresql_server_pid, url)
        try:
            for n in range(self.count):
                self.nodes.append(ServeNode.start(f"node{n + 1}", env, self.directory))
            await asyncio.to_thread(wait_until_ready, self.nodes)
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(node.stop) for node in self.nodes))

    @property
    def api_urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def relay_ports(self) -> list[int]:
        ports = [node.relay_port for node in self.nodes]
        if None in ports:
            raise RuntimeError("a node serves no relay (smtp.enabled is false)")
        return [port for port in ports if port is not None]

    @property
    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds over every node's processes so far."""
        return tree_cpu_seconds(self.pids)

    def database_cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the PostgreSQL server's processes so far; None on SQLite (its work
        is the nodes' own) or with a server on another machine."""
        return None if self._database_pid is None else tree_cpu_seconds([self._database_pid])

    def rss_mb(self) -> float:
        """Resident memory of every node's processes, in MB."""
        total = 0
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(pid)
                for member in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += member.memory_info().rss
        return round(total / 1_000_000, 1)

    async def delivered(self, expected: int) -> list[int]:
        """Deliveries per node, once they add up to `expected` (delivery children report their counts
        every moment) or after `COUNTS_TIMEOUT`."""
        deadline = time.monotonic() + COUNTS_TIMEOUT
        async with httpx.AsyncClient(timeout=60) as client:
            while True:
                replies = await asyncio.gather(*(client.get(f"{url}/metrics") for url in self.api_urls))
                counts = [_delivered(reply.text) for reply in replies]
                if sum(counts) >= expected or time.monotonic() > deadline:
                    return counts
                await asyncio.sleep(0.25)


@contextlib.contextmanager
def shared_limits(redis_url: str, nodes: int) -> Iterator[dict[str, Any]]:
    """The `redis` settings of a run: with several nodes, limits shared through `redis_url` under a prefix
    of the run's own (its keys deleted afterwards); one node keeps them in its processes' memory."""
    if nodes == 1:
        yield {}
        return
    prefix = f"estafeta-bench:{secrets.token_hex(6)}:"
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"several nodes share their limits through Redis: {redis_url}: {exc}") from exc
    try:
        yield {"url": redis_url, "key_prefix": prefix}
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
