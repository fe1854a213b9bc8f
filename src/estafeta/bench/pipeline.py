"""`estafeta bench pipeline`: messages/second from API accept to the receiver's 250.

The platform runs as `estafeta serve` processes (`estafeta.bench.nodes`), one per node, on one SQLite file
or PostgreSQL schema (with several nodes, their limits shared through Redis): each with
`delivery.processes = 1` and `front.processes` = one per core by default. The HTTP clients run in a child
process, spreading their requests over the nodes' API ports, and the receiver is the benchmark sink in
another, as real clients and receivers would not share the sender's CPU. The clock starts at the first
POST and stops when the sink has the last message. CPU-seconds are summed over every node's processes
(not the clients', not the sink's, not the database server's).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from estafeta import loop as event_loop
from estafeta.audit import SYSTEM
from estafeta.bench.nodes import Nodes, shared_limits
from estafeta.bench.resources import (
    DEFAULT_REDIS_URL,
    database_cpu_figure,
    database_url,
    end_with_parent,
    join_or_kill,
    load_average,
)
from estafeta.bench.sink import SinkProcess
from estafeta.clock import SystemClock
from estafeta.core import Core
from estafeta.sandbox import sandbox_settings
from estafeta.store import queue as queue_store
from estafeta.store.bench import delivery_latencies
from estafeta.store.db import Database

PROVIDERS = ("gmail.test", "yahoo.test", "outlook.test")
TIME_LIMIT = 600.0
DELIVERY_PROCESSES = 1
CONNECTIONS_PER_FRONT_PROCESS = 4  # the kernel spreads connections over the front processes at random


async def run_pipeline(
    *,
    messages: int,
    batch: int,
    algorithm: str,
    backend: str,
    postgresql_url: str,
    console: Console,
    front_processes: int = 1,
    nodes: int = 1,
    redis_url: str = DEFAULT_REDIS_URL,
) -> dict[str, Any]:
    concurrency = CONNECTIONS_PER_FRONT_PROCESS * front_processes * nodes
    with (
        tempfile.TemporaryDirectory(prefix="estafeta-bench-") as tmp,
        database_url(backend, Path(tmp), postgresql_url) as url,
        SinkProcess(PROVIDERS) as sink_process,
        shared_limits(redis_url, nodes) as limits,
    ):
        sink = sink_process.addresses
        settings = sandbox_settings(
            url,
            sink.dns_address,
            sink.smtp_port,
            # Delivery in a process of its own, with delivery.processes = 1; the front wakes it when mail
            # is queued, so it need not poll often.
            delivery={"idle_timeout": 5, "processes": DELIVERY_PROCESSES},
            front={"processes": front_processes},
            smtp={"enabled": False},
            warmup={"tiers": []},  # a benchmark sends more than a new account may
            redis=limits,
        )
        setup = Core(settings, clock=SystemClock())
        try:
            account = await setup.accounts.create("bench", actor=SYSTEM)
            await setup.domains.add(account.id, "bench.test", algorithm, actor=SYSTEM)
            token = (await setup.api_keys.create(account.id, "bench", actor=SYSTEM)).token
        finally:
            await setup.aclose()
        context = multiprocessing.get_context("spawn")
        accepted = context.Value("i", 0)
        receiver, sender = context.Pipe(duplex=False)
        async with Nodes(settings, nodes, Path(tmp)) as cluster:
            clients = context.Process(
                target=_client_process,
                args=(cluster.api_urls, token, messages, batch, concurrency, accepted, sender),
                name="estafeta-bench-clients",
            )
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
                cpu_before, database_cpu_before = cluster.cpu_seconds(), cluster.database_cpu_seconds()
                started = time.perf_counter()
                clients.start()

                drain: list[tuple[float, int]] = []  # when every message was accepted, and how many were in

                def advance(received: int) -> None:
                    progress.update(accepted_bar, completed=accepted.value)
                    progress.update(delivered_bar, completed=received)
                    if not drain and accepted.value >= messages:
                        drain.append((time.perf_counter(), received))

                finished = await sink_process.wait_for(messages, TIME_LIMIT, advance)
                cpu = cluster.cpu_seconds() - cpu_before
                database_cpu_after = cluster.database_cpu_seconds()
            answered = await asyncio.to_thread(receiver.poll, TIME_LIMIT)
            outcome: dict[str, Any] = receiver.recv() if answered else {"error": "no answer"}
            # From the first POST: the clients' process start-up (imports) is not the platform's time.
            seconds = finished - outcome.get("started", started)
            await join_or_kill(clients)
            received = sink_process.received
            per_node = await cluster.delivered(received)
        # Read once every node stopped (finishing what it had under way): a copy sent twice shows here.
        received_by_sink = sink_process.received
        db = Database(url)
        try:
            latencies = await db.run(delivery_latencies)
            counts = await db.run(queue_store.state_counts)
        finally:
            db.close()
    if "error" in outcome:
        raise RuntimeError(f"benchmark clients failed: {outcome['error']}")
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "messages": messages,
        "batch_size": batch,
        "dkim": algorithm,
        "database": backend,
        "nodes": nodes,
        "front_processes": front_processes,
        "delivery_processes": DELIVERY_PROCESSES,
        "delivered": counts.get("delivered", 0),
        "delivered_per_node": per_node,
        "received_by_sink": received_by_sink,
        "seconds": round(seconds, 3),
        "accept_msgs_per_s": round(messages / outcome["seconds"], 1),
        "pipeline_msgs_per_s": round(received / seconds, 1),
        "cpu_ms_per_msg": round(1000 * cpu / max(received, 1), 2),
        **database_cpu_figure(database_cpu_before, database_cpu_after, received),
        # Delivery alone: the rate at which the queue drained once every message was accepted.
        "drain_msgs_per_s": _drain_rate(drain, finished, received),
        "latency_p50_ms": round(quantiles[49] * 1000, 1),
        "latency_p95_ms": round(quantiles[94] * 1000, 1),
        "loadavg": load_average(),
    }


def _drain_rate(drain: list[tuple[float, int]], finished: float, received: int) -> float | None:
    """Messages per second delivered after the last accept; None when too few were left to time."""
    if not drain or received - drain[0][1] < 100 or finished <= drain[0][0]:
        return None
    accepted_at, already = drain[0]
    return round((received - already) / (finished - accepted_at), 1)


def _client_process(
    urls: list[str],
    token: str,
    messages: int,
    batch: int,
    concurrency: int,
    accepted: Synchronized[int],
    results: Connection,
) -> None:
    """Child process: post every message, send back the seconds it took."""
    end_with_parent()
    try:
        started, seconds = event_loop.run(_post_all(urls, token, messages, batch, concurrency, accepted))
        results.send({"started": started, "seconds": seconds})
    except Exception as exc:
        results.send({"error": repr(exc)})


async def _post_all(
    urls: list[str], token: str, messages: int, batch: int, concurrency: int, accepted: Synchronized[int]
) -> tuple[float, float]:
    """When the first POST went out (perf_counter is the system-wide monotonic clock on Linux, comparable
    with the parent's) and the seconds until every message was accepted."""
    started = time.perf_counter()
    starts = iter(range(0, messages, batch))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:

        async def worker(url: str) -> None:
            for first in starts:
                last = min(first + batch, messages)
                recipients = [f"user{i}@{PROVIDERS[i % len(PROVIDERS)]}" for i in range(first, last)]
                body = {
                    "messages": [
                        {
                            "from": "Bench <bench@bench.test>",
                            "to": [rcpt],
                            "subject": "Benchmark message",
                            "text": "A benchmark message.\n" * 20,
                            "html": "<p>A benchmark message.</p>" * 20,
                        }
                        for rcpt in recipients
                    ]
                }
                response = await client.post(f"{url}/v1/messages", json=body)
                response.raise_for_status()
                with accepted.get_lock():
                    accepted.value += len(recipients)

        # Each node's API gets an equal share of the connections, as behind a load balancer.
        await asyncio.gather(*(worker(urls[n % len(urls)]) for n in range(concurrency)))
    return started, time.perf_counter() - started
