"""`estafeta demo`: the whole platform on an embedded SQLite file against the simulated internet.

It creates an account, a sending domain (DKIM published in the world's DNS) and an API key, sends mail
to a mix of providers through the HTTP API, follows it to a final state and prints what happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from estafeta.clock import SystemClock
from estafeta.core import Core
from estafeta.platform import Platform
from estafeta.reports.dmarc import Summary
from estafeta.reports.dmarc_table import render as render_dmarc
from estafeta.sandbox import sandbox_settings, zone_lines
from estafeta.store import queue as queue_store
from estafeta.world import start_world_process

# recipient domain → share of the demo's mail
MIX = {
    "gmail.test": 30,
    "yahoo.test": 18,
    "outlook.test": 18,
    "greylist.test": 8,
    "full.test": 6,
    "bounce.test": 5,
    "nomx.test": 4,
    "down.test": 4,
    "trap.test": 2,
    "nowhere.test": 5,
}
DEMO_DELIVERY = {
    "retry_schedule": [1, 2, 3],
    "max_age": 8,
    "throttle_pause": 0.5,
    "idle_timeout": 2,
    "poll_interval": 0.1,
    "processes": 1,  # delivery in a process of its own, as on any machine with more than one core
}
FINAL = ("delivered", "bounced", "suppressed")  # suppressed: e.g. a domain found to take no mail


@dataclass
class DemoResult:
    accepted: int
    final: int
    seconds: float
    per_domain: dict[str, dict[str, int]]
    deferrals: dict[str, int]
    database: Path
    dmarc: Summary | None = None  # what the receivers' DMARC reports say about the demo's domain


# Some mailboxes report back after accepting: a late bounce, a spam complaint, an out-of-office reply.
REPORTING = {"outlook.test": ("gone", "ooo"), "yahoo.test": ("complainer",)}


def _recipients(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    domains = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    names = [f"user{i}" for i in range(count)]
    for i, domain in enumerate(domains):
        if domain in REPORTING and i % 10 == 0:
            names[i] = f"{rng.choice(REPORTING[domain])}{i}"
    return [f"{name}@{domain}" for name, domain in zip(names, domains, strict=True)]


async def run_demo(messages: int, workdir: Path, console: Console, batch: int = 100) -> DemoResult:
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "estafeta-demo.db"
    for stale in workdir.glob("estafeta-demo.db*"):
        stale.unlink()
    clock = SystemClock()

    # The sending domain's key must be in the world's DNS before the world starts.
    setup = Core(sandbox_settings(db_path, ("127.0.0.1", 53), 25), clock=clock)
    account = await setup.accounts.create("demo")
    domain, key = await setup.domains.add(account.id, "acme.test")
    api_key = await setup.api_keys.create(account.id, "demo")
    setup.close()

    console.print("[bold]Starting the simulated internet[/] (DNS + 9 mailbox providers on 127.0.0.x)…")
    world = await asyncio.to_thread(start_world_process, extra_zone=zone_lines([key]))
    platform: Platform | None = None
    try:
        settings = sandbox_settings(
            db_path,
            world.dns_address,
            world.smtp_port,
            delivery=DEMO_DELIVERY,
            inbound={"enabled": True, "port": 0},
            mta_sts={"ca_file": world.ca_file, "policy_port": world.https_port},
            # The demo's mix is bad on purpose (bounces, traps), and its size is chosen by the user.
            reputation={"enabled": False},
            warmup={"tiers": []},
        )
        platform = Platform(settings, clock)
        await platform.start()
        assert platform.inbound_address is not None
        await asyncio.to_thread(world.report_to, *platform.inbound_address)
        console.print(
            f"Platform up: API {platform.api_url}  ·  account [cyan]demo[/]  ·  domain "
            f"[cyan]{domain.name}[/] (DKIM {key.algorithm}, selector {key.selector})"
        )
        recipients = _recipients(messages)
        started = time.perf_counter()
        result = await _send_and_follow(platform, api_key.token, recipients, batch, console)
        seconds = time.perf_counter() - started
        per_domain = await platform.core.db.run(queue_store.domain_state_counts)
        deferrals = await platform.core.db.run(queue_store.event_counts_by_domain, "deferred")
        reports = await asyncio.to_thread(world.send_dmarc_reports)
        dmarc = await _dmarc_reports(platform, domain.name, reports)
        return DemoResult(messages, result, seconds, per_domain, deferrals, db_path, dmarc)
    finally:
        if platform is not None:
            await platform.stop()
        await asyncio.to_thread(world.stop)


async def _dmarc_reports(platform: Platform, domain: str, expected: int, timeout: float = 10.0) -> Summary:
    """The DMARC view of `domain` once the receivers' reports have arrived (or `timeout` has passed)."""
    deadline = time.monotonic() + timeout
    while True:
        summary = await platform.core.dmarc.summary(domain)
        if summary.reports >= expected or time.monotonic() > deadline:
            return summary
        await asyncio.sleep(0.1)


async def _send_and_follow(
    platform: Platform, token: str, recipients: list[str], batch: int, console: Console
) -> int:
    progress = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    total = len(recipients)
    with progress:
        accepted_bar = progress.add_task("accepted", total=total)
        final_bar = progress.add_task("final", total=total)
        async with httpx.AsyncClient(
            base_url=platform.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            sem = asyncio.Semaphore(4)

            async def post(chunk: list[str]) -> None:
                body = {
                    "messages": [
                        {
                            "from": "Acme Newsletter <news@acme.test>",
                            "to": [rcpt],
                            "subject": "Your weekly Acme digest",
                            "text": f"Hello {rcpt.split('@')[0]},\n\nThis week at Acme…\n",
                            "html": f"<p>Hello {rcpt.split('@')[0]},</p><p>This week at Acme…</p>",
                            "stream": "broadcast",
                            "headers": {
                                "List-Unsubscribe": "<https://acme.test/unsubscribe>",
                                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                            },
                            "tags": ["weekly-digest"],
                        }
                        for rcpt in chunk
                    ]
                }
                async with sem:
                    response = await client.post("/v1/messages", json=body)
                response.raise_for_status()
                progress.advance(accepted_bar, len(chunk))

            senders = [asyncio.create_task(post(recipients[i : i + batch])) for i in range(0, total, batch)]
            final = 0
            deadline = time.monotonic() + 120
            while final < total and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                counts = await platform.core.db.run(queue_store.state_counts)
                final = sum(counts.get(s, 0) for s in FINAL)
                progress.update(final_bar, completed=final)
            await asyncio.gather(*senders)
    return final


def render(result: DemoResult, console: Console) -> None:
    cols = ("delivered", "deferred", "bounced", "suppressed", "queued")
    rows: dict[str, dict[str, int]] = {}
    for domain, states in sorted(result.per_domain.items()):
        rows[domain] = {
            "delivered": states.get("delivered", 0),
            "deferred": result.deferrals.get(domain, 0),
            "bounced": states.get("bounced", 0),
            "suppressed": states.get("suppressed", 0),
            "queued": states.get("queued", 0) + states.get("deferred", 0),
        }
    table = Table(title="Demo: what happened to the mail", show_footer=True)
    table.add_column("provider", footer="total")
    for col in cols:
        table.add_column(col, justify="right", footer=str(sum(r[col] for r in rows.values())))
    for domain, row in rows.items():
        table.add_row(domain, *(str(row[c]) for c in cols))
    console.print(table)
    rate = result.final / result.seconds if result.seconds else 0.0
    console.print(
        f"{result.accepted} messages accepted, {result.final} reached a final state in "
        f"{result.seconds:.1f} s → [bold]{rate:.0f} messages/s[/]  "
        "(deferred counts deferrals; each was retried)"
    )
    if result.dmarc is not None:
        console.print("\n[bold]DMARC aggregate reports the receivers sent back[/]")
        console.print(render_dmarc(result.dmarc))
    console.print(
        "\n[bold]Where next[/]\n"
        f"  • The demo database is kept at {result.database}; look inside with\n"
        f"    ESTAFETA_DATABASE_URL=sqlite:///{result.database} estafeta domains list\n"
        "    (and `estafeta domains dmarc acme.test` for the DMARC reports)\n"
        "  • Run the platform for real: `estafeta serve` (API http://127.0.0.1:8025, OpenAPI at /docs)\n"
        "  • Play in the sandbox: `estafeta world`\n"
        "  • Operator docs: docs/ (DNS records, deployment, PostgreSQL)"
    )
