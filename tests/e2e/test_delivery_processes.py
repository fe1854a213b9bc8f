"""Delivery in processes of its own: `delivery.processes` children of the front process, and
`estafeta serve --role front` beside `estafeta serve --role delivery`, all on one SQLite database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings
from estafeta.store import queue as queue_store
from estafeta.store.db import Database
from estafeta.world import World
from tests.factories import add_sender_now

ESTAFETA = [sys.executable, "-m", "estafeta"]


def _prepare(world: World, database: Path) -> str:
    """An account with a verified sending domain (published in the world) and an API key; returns the key's
    token."""
    settings = sandbox_settings(database, world.dns_address, world.smtp_port)
    return add_sender_now(settings, "acme", "acme.test").token


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.1)


async def _post(client: httpx.AsyncClient, first: int, count: int) -> None:
    messages = [
        {"from": "a@acme.test", "to": [f"user{i}@gmail.test"], "subject": f"n{i}", "text": "hi"}
        for i in range(first, first + count)
    ]
    response = await client.post("/v1/messages", json={"messages": messages})
    assert response.status_code == 202, response.text


async def test_child_processes_deliver_report_metrics_and_are_restarted(
    fresh_world: World, tmp_path: Path
) -> None:
    database = tmp_path / "front.db"
    token = _prepare(fresh_world, database)
    settings = sandbox_settings(
        database,
        fresh_world.dns_address,
        fresh_world.smtp_port,
        # A long poll: delivery within it shows the front woke the child when mail was queued.
        delivery={"processes": 1, "poll_interval": 30, "idle_timeout": 0.5},
        warmup={"tiers": []},
    )
    platform = Platform(settings)
    await platform.start()
    client = httpx.AsyncClient(base_url=platform.api_url, headers={"Authorization": f"Bearer {token}"})
    try:
        (first,) = platform.supervisor.children("delivery")
        pid = first.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a child that reads nothing (busy, or still starting) …
        for _ in range(5_000):  # … never makes the front wait: wake-ups are dropped once one is pending
            platform.wake_delivery()
            await asyncio.sleep(0)  # each turn of the loop may write its own wake-up
        os.kill(pid, signal.SIGCONT)
        await _post(client, 0, 20)

        async def delivered(n: int) -> bool:
            return (await platform.core.db.run(queue_store.state_counts)).get("delivered", 0) == n

        await _until(lambda: delivered(20), timeout=15)
        assert len(fresh_world.received("gmail.test")) == 20

        async def counted(n: float) -> bool:
            text = (await platform.core.metrics.render(platform.core.db)).decode()
            # Attempts and commit window alike: n outcomes committed, none waiting for its commit.
            return all(
                sample in text
                for sample in (
                    f'estafeta_delivery_attempts_total{{outcome="delivered"}} {n}',
                    f'estafeta_delivery_reply_to_commit_seconds_bucket{{le="+Inf"}} {n}',
                    "estafeta_delivery_acknowledged_uncommitted 0.0",
                )
            )

        await _until(lambda: counted(20.0), timeout=10)  # the child's attempts reach the front's /metrics

        os.kill(pid, signal.SIGKILL)

        async def replaced() -> bool:
            children = platform.supervisor.children("delivery")
            return len(children) == 1 and children[0] is not first and children[0].ready.done()

        await _until(replaced)
        await _post(client, 20, 10)
        await _until(lambda: delivered(30), timeout=15)
        await _until(lambda: counted(30.0), timeout=10)  # the new child counts from zero, added on top
        # (the dead child's commit times stay counted, as its attempts do)
    finally:
        await client.aclose()
        await platform.stop(grace=2)
    assert not first.process.is_alive()
    db = Database(f"sqlite:///{database}")
    assert db.call(queue_store.state_counts) == {"delivered": 30}
    db.close()


async def test_serve_roles_front_and_delivery_share_the_database(fresh_world: World, tmp_path: Path) -> None:
    database = tmp_path / "roles.db"
    token = _prepare(fresh_world, database)
    host, port = fresh_world.dns_address
    config = tmp_path / "estafeta.toml"
    config.write_text(
        f'database_url = "sqlite:///{database}"\nhostname = "mta.estafeta.test"\n'
        f'return_path_domain = "bounces.estafeta.test"\ndns_servers = ["{host}:{port}"]\n'
        '[api]\nhost = "127.0.0.1"\nport = 0\n'
        f"[delivery]\npoll_interval = 0.1\nsmtp_port = {fresh_world.smtp_port}\n"
        "[smtp]\nenabled = false\n[warmup]\ntiers = []\n"
    )

    def start(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*ESTAFETA, "serve", "--config", str(config), "--role", role],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    front = start("front")
    delivery: subprocess.Popen[str] | None = None
    try:
        url = None
        for line in front.stderr:  # type: ignore[union-attr]
            message = json.loads(line)["message"]
            if message.startswith("serving API on "):
                url = message.removeprefix("serving API on ")
                break
        assert url, "the front never said where it listens"
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            await _post(client, 0, 5)
        db = Database(f"sqlite:///{database}")
        await asyncio.sleep(1)  # ten of the front's poll intervals: it has no delivery engine
        assert db.call(queue_store.state_counts) == {"queued": 5}
        delivery = start("delivery")

        async def delivered() -> bool:
            return db.call(queue_store.state_counts).get("delivered", 0) == 5

        await _until(delivered, timeout=20)
        db.close()
        assert len(fresh_world.received("gmail.test")) == 5
    finally:
        running = [proc for proc in (front, delivery) if proc is not None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.communicate(timeout=30)
    assert front.returncode == 0 and delivery is not None and delivery.returncode == 0
