"""`estafeta bench pipeline`: messages/second from API accept to the receiver's 250.

The platform runs as `estafeta serve` runs it with `delivery.processes = 1`: the API (SQLite, DKIM signing)
in this process, delivery in a child process. The simulated internet runs in another child process, as a
real receiver would not share the sender's CPU. The clock starts at the first POST and stops when the last
message is delivered.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from estafeta.clock import SystemClock
from estafeta.core import Core
from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings, zone_lines
from estafeta.store import queue as queue_store
from estafeta.store.bench import delivery_latencies
from estafeta.world import start_world_process

PROVIDERS = ("gmail.test", "yahoo.test", "outlook.test")
TIME_LIMIT = 600.0
DELIVERY_PROCESSES = 1


async def run_pipeline(
    *, messages: int, batch: int, algorithm: str, console: Console, concurrency: int = 4
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="estafeta-bench-") as tmp:
        db_path = Path(tmp) / "bench.db"
        clock = SystemClock()
        setup = Core(sandbox_settings(db_path, ("127.0.0.1", 53), 25), clock=clock)
        account = await setup.accounts.create("bench")
        _, key = await setup.domains.add(account.id, "bench.test", algorithm)
        token = (await setup.api_keys.create(account.id, "bench")).token
        setup.close()

        world = await asyncio.to_thread(
            start_world_process, extra_zone=zone_lines([key]), gmail_rate_limit=1_000_000
        )
        platform = Platform(
            sandbox_settings(
                db_path,
                world.dns_address,
                world.smtp_port,
                # Delivery in a process of its own, as `estafeta serve` runs it with delivery.processes = 1:
                # accepting and delivering each get a core.
                delivery={"poll_interval": 0.05, "idle_timeout": 5, "processes": DELIVERY_PROCESSES},
                warmup={"tiers": []},  # a benchmark sends more than a new account may
            )
        )
        try:
            await platform.start()
            recipients = [f"user{i}@{PROVIDERS[i % len(PROVIDERS)]}" for i in range(messages)]
            chunks = [recipients[i : i + batch] for i in range(0, messages, batch)]
            progress = Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            with progress:
                accepted_bar = progress.add_task("accepted", total=messages)
                delivered_bar = progress.add_task("delivered", total=messages)
                started = time.perf_counter()
                accept_seconds = await _post_all(
                    platform.api_url, token, chunks, concurrency, lambda n: progress.advance(accepted_bar, n)
                )
                delivered = 0
                while delivered < messages and time.perf_counter() - started < TIME_LIMIT:
                    counts = await platform.core.db.run(queue_store.state_counts)
                    delivered = counts.get("delivered", 0)
                    progress.update(delivered_bar, completed=delivered)
                    if delivered < messages:
                        await asyncio.sleep(0.05)
                seconds = time.perf_counter() - started
            latencies = await platform.core.db.run(delivery_latencies)
            counts = await platform.core.db.run(queue_store.state_counts)
        finally:
            await platform.stop()
            await asyncio.to_thread(world.stop)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "messages": messages,
        "batch_size": batch,
        "dkim": algorithm,
        "database": "sqlite",
        "delivery_processes": DELIVERY_PROCESSES,
        "delivered": counts.get("delivered", 0),
        "not_delivered": messages - counts.get("delivered", 0),
        "seconds": round(seconds, 3),
        "accept_msgs_per_s": round(messages / accept_seconds, 1),
        "pipeline_msgs_per_s": round(counts.get("delivered", 0) / seconds, 1),
        "latency_p50_ms": round(quantiles[49] * 1000, 1),
        "latency_p95_ms": round(quantiles[94] * 1000, 1),
    }


async def _post_all(url: str, token: str, chunks: list[list[str]], concurrency: int, advance: Any) -> float:
    started = time.perf_counter()
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                body = {
                    "messages": [
                        {
                            "from": "Bench <bench@bench.test>",
                            "to": [rcpt],
                            "subject": "Benchmark message",
                            "text": "A benchmark message.\n" * 20,
                            "html": "<p>A benchmark message.</p>" * 20,
                        }
                        for rcpt in chunk
                    ]
                }
                response = await client.post("/v1/messages", json=body)
                response.raise_for_status()
                advance(len(chunk))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started
