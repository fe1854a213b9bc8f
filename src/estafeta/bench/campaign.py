"""`estafeta bench campaign`: a campaign to a large list (100k contacts by default), delivered to the sink.

The platform runs as `estafeta serve` processes (`estafeta.bench.nodes`), one per node (campaign runner and
API in each node's serve process, delivery in a child), on one SQLite file or PostgreSQL schema (with
several nodes, their limits shared through Redis). The list is imported and the campaign created before
the nodes start; it is sent through the first node's API and delivered by all. Measured: importing the
list (CSV, in chunks); queueing every message (`send now` until all recipients are durably recorded and
deliverable; each is rendered and DKIM-signed just ahead of delivery, within `audience.lookahead`);
delivering to the sink (until the time limit); the resident memory of every node's processes when all are
queued, when 10k are rendered and at the end (it should stay flat as the queue grows); CPU milliseconds
per delivered message over those processes; how many messages each node delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from estafeta.audience.campaigns import MAX_RATE, CampaignSpec
from estafeta.audience.consent import ConsentRecord
from estafeta.audit import SYSTEM
from estafeta.bench.nodes import Nodes, shared_limits
from estafeta.bench.resources import DEFAULT_REDIS_URL, database_cpu_figure, database_url, load_average
from estafeta.bench.sink import SinkProcess
from estafeta.clock import SystemClock
from estafeta.core import Core
from estafeta.sandbox import sandbox_settings
from estafeta.store.bench import campaign_progress
from estafeta.store.db import Database

PROVIDERS = ("gmail.test", "yahoo.test", "outlook.test")
DELIVERY_PROCESSES = 1
RSS_EARLY = 10_000
HTML = (
    "<html><body><p>Hello {{ contact.first_name }},</p>" + "<p>News of the month.</p>" * 20 + "</body></html>"
)


def contacts_csv(count: int) -> str:
    lines = ["email,first_name"]
    lines += [f"person{i}@{PROVIDERS[i % len(PROVIDERS)]},Person {i}" for i in range(count)]
    return "\n".join(lines) + "\n"


def _count(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


async def _until(
    condition: Callable[[], Any], limit: float, every: float = 0.5, progress: Callable[[], None] | None = None
) -> bool:
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if await condition():
            return True
        if progress is not None:
            progress()
        await asyncio.sleep(every)
    return False


async def run_campaign(
    *,
    contacts: int,
    backend: str,
    postgresql_url: str,
    time_limit: float,
    console: Console,
    nodes: int = 1,
    redis_url: str = DEFAULT_REDIS_URL,
) -> dict[str, Any]:
    result: dict[str, Any] = {"contacts": contacts, "database": backend, "nodes": nodes}
    with (
        tempfile.TemporaryDirectory(prefix="estafeta-bench-") as tmp,
        database_url(backend, Path(tmp), postgresql_url) as url,
        SinkProcess(PROVIDERS) as sink,
        shared_limits(redis_url, nodes) as limits,
    ):
        settings = sandbox_settings(
            url,
            sink.addresses.dns_address,
            sink.addresses.smtp_port,
            delivery={"poll_interval": 0.05, "idle_timeout": 5, "processes": DELIVERY_PROCESSES},
            smtp={"enabled": False},
            warmup={"tiers": []},  # a benchmark sends more than a new account may
            audience={"campaign_batch": 500},
            redis=limits,
        )
        core = Core(settings, clock=SystemClock())
        try:
            account = await core.accounts.create("bench", actor=SYSTEM)
            await core.domains.add(account.id, "bench.test", "rsa-sha256", actor=SYSTEM)
            token = (await core.api_keys.create(account.id, "bench", actor=SYSTEM)).token
            mailing_list = await core.audience.create_list(
                account.id, "Bench", "News <news@bench.test>", False
            )
            with console.status(f"importing {contacts:,} contacts"):
                started, cpu_started = time.perf_counter(), time.process_time()
                report = await core.audience.import_csv(
                    account.id,
                    mailing_list,
                    contacts_csv(contacts),
                    ConsentRecord("import:bench", confirmed=True),
                )
                result["import_seconds"] = round(time.perf_counter() - started, 2)
                result["import_cpu_seconds"] = round(time.process_time() - cpu_started, 2)
                result["imported"] = report.added
            campaign = await core.audience.campaigns.create(
                account.id,
                CampaignSpec(
                    "Bench", mailing_list.id, "News for {{ contact.first_name }}", html=HTML, rate=MAX_RATE
                ),
            )
        finally:
            await core.aclose()
        db = Database(url)
        try:
            async with Nodes(settings, nodes, Path(tmp)) as cluster:
                await _deliver(cluster, db, campaign.id, token, contacts, sink, time_limit, result, console)
        finally:
            db.close()
    return result


async def _deliver(
    cluster: Nodes,
    db: Database,
    campaign_id: int,
    token: str,
    contacts: int,
    sink: SinkProcess,
    time_limit: float,
    result: dict[str, Any],
    console: Console,
) -> None:
    """Send the campaign through the first node and follow it until the sink has every message (or the
    time limit passes), adding the figures to `result`."""
    cpu_before, database_cpu_before = cluster.cpu_seconds(), cluster.database_cpu_seconds()
    started = time.perf_counter()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        response = await client.post(f"{cluster.api_urls[0]}/v1/campaigns/{campaign_id}/send")
    if response.status_code != 200:
        raise RuntimeError(f"the campaign could not be sent: {response.status_code} {response.text}")
    result["send_now_seconds"] = round(time.perf_counter() - started, 2)
    counts: dict[str, int] = {}
    early = f"rss_mb_at_{_count(min(RSS_EARLY, contacts))}_queued"

    async def read() -> bool:
        fixed, found = await db.run(campaign_progress, campaign_id)
        counts.clear()
        counts.update(found)
        if early not in result and sum(found.values()) >= min(RSS_EARLY, contacts):
            result[early] = cluster.rss_mb()
        return fixed

    async def rendered_early() -> bool:
        await read()
        return counts.get("sent", 0) >= min(RSS_EARLY, contacts)

    with console.status("queueing: fixing the campaign's recipients"):
        all_queued = await _until(read, time_limit, every=0.1)
    queue_seconds = time.perf_counter() - started
    result["queued"] = sum(counts.values())
    result["queue_seconds"] = round(queue_seconds, 2) if all_queued else "not within limit"
    result["queue_msgs_per_s"] = round(result["queued"] / queue_seconds, 1)
    result[f"rss_mb_at_{_count(result['queued'])}_queued"] = cluster.rss_mb()
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        rendered_bar = progress.add_task("rendered", total=contacts)
        delivered_bar = progress.add_task("delivered", total=contacts)

        def show(_: int = 0) -> None:
            progress.update(rendered_bar, completed=counts.get("sent", 0))
            progress.update(delivered_bar, completed=sink.received)

        if await _until(rendered_early, time_limit - queue_seconds, progress=show):
            result[f"rss_mb_at_{_count(min(RSS_EARLY, contacts))}_rendered"] = cluster.rss_mb()
        remaining = max(time_limit - (time.perf_counter() - started), 0.0)

        async def recount() -> bool:  # keeps the rendered bar moving while the sink is awaited
            await read()
            return False

        counting = asyncio.create_task(_until(recount, remaining, every=1.0))
        try:
            finished = await sink.wait_for(contacts, remaining, show)
        finally:
            counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counting
        cpu = cluster.cpu_seconds() - cpu_before
        database_cpu_after = cluster.database_cpu_seconds()
        await read()
        result["rendered"] = counts.get("sent", 0)
        result["rss_mb_at_end"] = cluster.rss_mb()
    result["delivered"] = sink.received
    result["delivered_per_node"] = await cluster.delivered(sink.received)
    result["deliver_seconds"] = (
        round(finished - started, 2) if sink.received >= contacts else "not within limit"
    )
    result["deliver_msgs_per_s"] = round(sink.received / max(finished - started, 1e-9), 1)
    result["cpu_ms_per_delivered_msg"] = round(1000 * cpu / max(sink.received, 1), 2)
    result |= database_cpu_figure(
        database_cpu_before, database_cpu_after, sink.received, "database_cpu_ms_per_delivered_msg"
    )
    result["loadavg"] = load_average()
