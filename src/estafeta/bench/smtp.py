"""`estafeta bench smtp`: messages/second accepted through the SMTP relay, and relayed to the sink.

The platform runs as `estafeta serve` processes (`estafeta.bench.nodes`), one per node, on one database
(with several nodes, their limits shared through Redis): the relay, the accept path with DKIM signing and a
durable commit before each 250 in each node's front processes, delivery in a child process relaying to the
benchmark sink, as Postfix does while it accepts. The mail clients run in a child process, as real clients
would not share the server's CPU; their sessions are spread over the nodes' relay ports. Each of `sessions`
clients connects to the submission port, negotiates STARTTLS, logs in, and then sends one message after
another, one command at a time as `smtp-source` does (`estafeta.bench.submission`). The accept clock
runs from the first MAIL to the last 250, the end-to-end clock until the sink has the last message;
connecting and logging in are not counted. CPU-seconds cover every node's processes; the clients' own CPU
is counted while they send.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import ssl
import statistics
import tempfile
import time
from ctypes import c_int
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from estafeta import loop as event_loop
from estafeta.audit import SYSTEM
from estafeta.bench.nodes import Nodes, shared_limits
from estafeta.bench.resources import (
    DEFAULT_REDIS_URL,
    database_cpu_figure,
    database_url,
    join_or_kill,
    load_average,
)
from estafeta.bench.sink import SinkProcess
from estafeta.bench.submission import Refused, Submission
from estafeta.clock import SystemClock
from estafeta.core import Core
from estafeta.delivery.pipelining import message_data
from estafeta.sandbox import sandbox_settings
from estafeta.store import queue as queue_store
from estafeta.store.db import Database
from estafeta.tls import write_self_signed

HOST = "127.0.0.1"
PROVIDERS = ("gmail.test", "yahoo.test", "outlook.test")
TIME_LIMIT = 600.0
DELIVERY_PROCESSES = 1


def bench_message(index: int) -> bytes:
    """A plain transactional message of about 2 KB, without Message-ID or Date (the relay adds them)."""
    body = "Thank you for your order. It will ship within two working days.\r\n" * 24
    return (
        f"From: Bench Shop <orders@bench.test>\r\n"
        f"To: user{index}@{PROVIDERS[index % len(PROVIDERS)]}\r\n"
        f"Subject: Order {index} confirmed\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n{body}"
    ).encode()


async def run_smtp(
    *,
    messages: int,
    sessions: int,
    algorithm: str,
    backend: str,
    postgresql_url: str,
    console: Console,
    front_processes: int = 1,
    nodes: int = 1,
    redis_url: str = DEFAULT_REDIS_URL,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="estafeta-bench-") as tmp,
        database_url(backend, Path(tmp), postgresql_url) as url,
        SinkProcess(PROVIDERS) as sink,
        shared_limits(redis_url, nodes) as limits,
    ):
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        write_self_signed(cert, key, [HOST])
        settings = sandbox_settings(
            url,
            sink.addresses.dns_address,
            sink.addresses.smtp_port,
            delivery={"idle_timeout": 5, "processes": DELIVERY_PROCESSES},  # woken by the front
            front={"processes": front_processes},
            smtp={
                "host": HOST,
                "starttls_port": 0,
                "implicit_tls_port": 0,
                "tls_cert": cert,
                "tls_key": key,
                "rate_per_second": 0,
                "max_connections_per_ip": sessions,
            },
            warmup={"tiers": []},  # a benchmark sends more than a new account may
            redis=limits,
        )
        setup = Core(settings, clock=SystemClock())
        try:
            account = await setup.accounts.create("bench", actor=SYSTEM)
            await setup.domains.add(account.id, "bench.test", algorithm, actor=SYSTEM)
            credential = await setup.smtp_credentials.create(account.id, actor=SYSTEM)
        finally:
            await setup.aclose()
        context = multiprocessing.get_context("spawn")
        sent = context.Value("i", 0, lock=False)  # written by the clients only, read for the progress bar
        receiver, sender = context.Pipe(duplex=False)
        async with Nodes(settings, nodes, Path(tmp)) as cluster:
            clients = context.Process(
                target=_client_process,
                args=(
                    cluster.relay_ports,
                    str(cert),
                    credential.username,
                    credential.password,
                    messages,
                    sessions,
                    sent,
                    sender,
                ),
                name="estafeta-bench-clients",
            )
            cpu_before, database_cpu_before = cluster.cpu_seconds(), cluster.database_cpu_seconds()
            clients.start()
            progress = Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            with progress:
                bar = progress.add_task("accepted", total=messages)
                relayed_bar = progress.add_task("relayed", total=messages)

                def advance(received: int) -> None:
                    progress.update(bar, completed=sent.value)
                    progress.update(relayed_bar, completed=received)

                finished = await sink.wait_for(messages, TIME_LIMIT, advance)
                cpu = cluster.cpu_seconds() - cpu_before
                database_cpu_after = cluster.database_cpu_seconds()
            answered = await asyncio.to_thread(receiver.poll, TIME_LIMIT)
            outcome: dict[str, Any] = receiver.recv() if answered else {"error": "no answer"}
            await join_or_kill(clients)
            relayed = sink.received
            per_node = await cluster.delivered(relayed)
        # Read once every node stopped (finishing what it had under way): a copy sent twice shows here.
        received_by_sink = sink.received
        db = Database(url)
        try:
            counts = await db.run(queue_store.state_counts)
        finally:
            db.close()
    if "error" in outcome:
        raise RuntimeError(f"benchmark clients failed: {outcome['error']}")
    latencies: list[float] = outcome["latencies"]
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "messages": messages,
        "sessions": sessions,
        "tls": "STARTTLS",
        "dkim": algorithm,
        "database": backend,
        "nodes": nodes,
        "front_processes": front_processes,
        "accepted": len(latencies),
        "refused": outcome["refused"],
        "delivered": counts.get("delivered", 0),
        "delivered_per_node": per_node,
        "received_by_sink": received_by_sink,
        "seconds": round(outcome["seconds"], 3),
        "msgs_per_s": round(len(latencies) / outcome["seconds"], 1),
        "relayed_msgs_per_s": round(relayed / (finished - outcome["started"]), 1),
        "cpu_ms_per_msg": round(1000 * cpu / max(len(latencies), 1), 2),
        **database_cpu_figure(database_cpu_before, database_cpu_after, len(latencies)),
        "client_cpu_ms_per_msg": round(1000 * outcome["client_cpu_seconds"] / max(len(latencies), 1), 2),
        "latency_p50_ms": round(quantiles[49] * 1000, 1),
        "latency_p95_ms": round(quantiles[94] * 1000, 1),
        "loadavg": load_average(),
    }


def _client_process(
    ports: list[int],
    cafile: str,
    username: str,
    password: str,
    messages: int,
    sessions: int,
    sent: c_int,
    results: Connection,
) -> None:
    """Child process: run the sessions, send back seconds, per-message latencies and refusals."""
    try:
        outcome = event_loop.run(_clients(ports, cafile, username, password, messages, sessions, sent))
        results.send(outcome)
    except Exception as exc:
        results.send({"error": repr(exc)})


async def _clients(
    ports: list[int],
    cafile: str,
    username: str,
    password: str,
    messages: int,
    sessions: int,
    sent: c_int,
) -> dict[str, Any]:
    tls = ssl.create_default_context(cafile=cafile)
    async with asyncio.timeout(60):  # a server that does not answer fails the run
        connections = [  # spread over the nodes, as behind a TCP load balancer
            await Submission.open(HOST, ports[n % len(ports)], tls, username, password)
            for n in range(sessions)
        ]
    pending = iter(range(messages))
    latencies: list[float] = []
    refused: list[str] = []
    deadline = time.monotonic() + TIME_LIMIT

    async def session(client: Submission) -> None:
        for index in pending:
            if time.monotonic() > deadline:
                return
            recipient = f"user{index}@{PROVIDERS[index % len(PROVIDERS)]}"
            data = message_data(bench_message(index))
            began = time.perf_counter()
            try:
                await client.send("orders@bench.test", recipient, data)
            except Refused as exc:
                refused.append(str(exc))
                continue
            latencies.append(time.perf_counter() - began)
            sent.value += 1

    started = time.perf_counter()
    cpu_before = time.process_time()  # while sending only: not the imports, connections and logins
    async with asyncio.timeout(TIME_LIMIT + 60):  # a server that stops answering fails the run
        await asyncio.gather(*(session(client) for client in connections))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    for client in connections:
        await client.quit()
    # perf_counter is the system-wide monotonic clock on Linux, comparable with the parent's.
    return {
        "started": started,
        "seconds": seconds,
        "latencies": latencies,
        "refused": len(refused),
        "client_cpu_seconds": cpu,
    }
