"""`estafeta demo`: the whole platform on an embedded SQLite file against the simulated internet.

Two senders share the platform, with reputation governance on. `acme` mails its own customers: most of
it is delivered, a few addresses bounce, greylisting and full mailboxes are retried. `bulkdeals` mails a
bought list: many unknown users, spam traps, people who complain. The platform pauses `bulkdeals`'
broadcast stream (its queued mail waits) and opens a review for an operator, while `acme` keeps sending.
The demo ends with what happened per provider and per sender (rates against the limits, the pause, the
review) and with the dashboard's address and logins: `--open` keeps the platform running and opens it.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from estafeta.audit import SYSTEM
from estafeta.clock import SystemClock
from estafeta.core import Core
from estafeta.platform import Platform
from estafeta.reports.dmarc import Summary
from estafeta.reports.dmarc_table import render as render_dmarc
from estafeta.reputation import HALTED
from estafeta.sandbox import sandbox_settings
from estafeta.store import queue as queue_store
from estafeta.world import start_world_process

# recipient domain → share of the healthy sender's mail
MIX = {
    "gmail.test": 34,
    "yahoo.test": 20,
    "outlook.test": 20,
    "greylist.test": 8,
    "full.test": 6,
    "nomx.test": 4,
    "down.test": 4,
    "bounce.test": 1,
}
# a bought list: mostly addresses nobody reads any more
BOUGHT_MIX = {"bounce.test": 45, "gmail.test": 20, "yahoo.test": 15, "outlook.test": 15, "trap.test": 5}
SPAM_TRAPS = ["trap.test"]
DEMO_DELIVERY = {
    "retry_schedule": [1, 2, 3],
    "max_age": 8,
    "throttle_pause": 0.5,
    "idle_timeout": 2,
    "poll_interval": 0.1,
    "processes": 1,  # delivery in a process of its own, as on any machine with more than one core
}
# Rates count from 50 outcomes, so that even a short demo shows them acting.
DEMO_REPUTATION = {"enabled": True, "min_volume": 50}
FINAL = ("delivered", "bounced", "suppressed")  # suppressed: e.g. a domain found to take no mail
OPERATOR = "operator@estafeta.test"


@dataclass
class Sender:
    """One of the demo's accounts: who it is, what it sends, and how it ended."""

    name: str
    domain: str
    from_: str
    subject: str
    recipients: list[str]
    login: str
    batch: int = 100  # recipients per API request
    pace: float = 0.0  # seconds between its requests (0: as fast as the platform takes them)
    token: str = ""
    account_id: int = 0
    accepted: int = 0
    refused: int = 0
    final: int = 0
    standing: dict[str, Any] = field(default_factory=dict)
    review_id: int | None = None


@dataclass
class DemoResult:
    accepted: int
    final: int
    seconds: float
    per_domain: dict[str, dict[str, int]]
    deferrals: dict[str, int]
    database: Path
    senders: list[Sender]
    logins: dict[str, str]  # dashboard email → password
    dashboard: str  # the dashboard's address while the demo's platform runs
    dmarc: Summary | None = None  # what the receivers' DMARC reports say about the healthy sender's domain


# Some mailboxes report back after accepting: a late bounce, a spam complaint, an out-of-office reply.
REPORTING = {"outlook.test": ("gone", "ooo")}


def _recipients(count: int, seed: int = 7) -> list[str]:
    """The healthy sender's customers."""
    rng = random.Random(seed)
    domains = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    names = [f"user{i}" for i in range(count)]
    for i, domain in enumerate(domains):
        if domain in REPORTING and i % 20 == 0:
            names[i] = f"{rng.choice(REPORTING[domain])}{i}"
    return [f"{name}@{domain}" for name, domain in zip(names, domains, strict=True)]


def _bought_list(count: int, seed: int = 11) -> list[str]:
    """A purchased list: unknown users, spam traps, and people who will complain."""
    rng = random.Random(seed)
    domains = rng.choices(list(BOUGHT_MIX), weights=list(BOUGHT_MIX.values()), k=count)
    out = []
    for i, domain in enumerate(domains):
        name = rng.choice(("info", "sales", "contact", "john.smith", "office", "admin")) + str(i)
        if domain == "yahoo.test" and i % 4 == 0:
            name = f"complainer{i}"
        out.append(f"{name}@{domain}")
    return out


async def run_demo(
    messages: int,
    workdir: Path,
    console: Console,
    batch: int = 100,
    while_running: Callable[[DemoResult], Awaitable[None]] | None = None,
) -> DemoResult:
    """Run both senders to the end; `while_running` is awaited with the result before the platform stops
    (e.g. to keep the dashboard open)."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "estafeta-demo.db"
    for stale in workdir.glob("estafeta-demo.db*"):
        stale.unlink()
    clock = SystemClock()
    senders = [
        Sender(
            "acme",
            "acme.test",
            "Acme Newsletter <news@acme.test>",
            "Your weekly Acme digest",
            _recipients(messages),
            "owner@acme.test",
            batch=batch,
        ),
        Sender(
            "bulkdeals",
            "deals.test",
            "Bulk Deals <offers@deals.test>",
            "Unbeatable offers inside",
            _bought_list(max(200, messages // 10)),
            "owner@deals.test",
            batch=20,
            pace=0.25,  # a blast loop, paced: the pause catches it while it sends
        ),
    ]

    console.print("[bold]Starting the simulated internet[/] (DNS + 9 mailbox providers on 127.0.0.x)…")
    world = await asyncio.to_thread(start_world_process)
    platform: Platform | None = None
    try:
        # `domains add` publishes each domain's DKIM, SPF and DMARC records in the world's DNS (RFC 2136)
        # and verifies them, as an operator publishes them in theirs: unverified domains cannot send.
        setup = Core(sandbox_settings(db_path, world.dns_address, world.smtp_port), clock=clock)
        for sender in senders:
            account = await setup.accounts.create(sender.name, actor=SYSTEM)
            await setup.domains.add(account.id, sender.domain, actor=SYSTEM)
            sender.account_id = account.id
            sender.token = (await setup.api_keys.create(account.id, "demo", actor=SYSTEM)).token
        setup.close()
        settings = sandbox_settings(
            db_path,
            world.dns_address,
            world.smtp_port,
            delivery=DEMO_DELIVERY,
            inbound={"enabled": True, "port": 0},
            mta_sts={"ca_file": world.ca_file, "policy_port": world.https_port},
            reputation=DEMO_REPUTATION,
            suppression={"spam_traps": SPAM_TRAPS},
            warmup={"tiers": []},
        )
        platform = Platform(settings, clock)
        logins = await _dashboard_users(platform, senders)
        await platform.start()
        assert platform.inbound_address is not None
        await asyncio.to_thread(world.report_to, *platform.inbound_address)
        console.print(
            f"Platform up: API {platform.api_url}  ·  senders "
            + ", ".join(f"[cyan]{s.name}[/] ({s.domain})" for s in senders)
        )
        started = time.perf_counter()
        await _send_and_follow(platform, senders, console)
        seconds = time.perf_counter() - started
        core = platform.core
        for sender in senders:
            sender.standing = await core.reputation.standing(sender.account_id)
            review = sender.standing["review"]
            sender.review_id = review["id"] if review else None
        per_domain = await core.db.run(queue_store.domain_state_counts)
        deferrals = await core.db.run(queue_store.event_counts_by_domain, "deferred")
        healthy = senders[0]
        reports = await asyncio.to_thread(world.send_dmarc_reports)
        dmarc = await _dmarc_reports(platform, healthy.domain, reports)
        result = DemoResult(
            healthy.accepted,
            healthy.final,
            seconds,
            per_domain,
            deferrals,
            db_path,
            senders,
            logins,
            f"{platform.api_url}/app/",
            dmarc,
        )
        if while_running is not None:
            await while_running(result)
        return result
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


async def _dashboard_users(platform: Platform, senders: list[Sender]) -> dict[str, str]:
    """An owner for each sender and a platform operator, with fresh passwords."""
    logins = {}
    for sender in senders:
        logins[sender.login] = secrets.token_urlsafe(12)
        await platform.core.users.create(
            sender.login, logins[sender.login], account_id=sender.account_id, role="owner", actor=SYSTEM
        )
    logins[OPERATOR] = secrets.token_urlsafe(12)
    await platform.core.users.create(
        OPERATOR, logins[OPERATOR], name="Platform operator", operator=True, actor=SYSTEM
    )
    return logins


def _message(sender: Sender, rcpt: str) -> dict[str, Any]:
    local = rcpt.split("@")[0]
    return {
        "from": sender.from_,
        "to": [rcpt],
        "subject": sender.subject,
        "text": f"Hello {local},\n\nThis week at {sender.name}…\n",
        "html": f"<p>Hello {local},</p><p>This week at {sender.name}…</p>",
        "stream": "broadcast",
        "headers": {
            "List-Unsubscribe": f"<https://{sender.domain}/unsubscribe>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "tags": ["weekly-digest"],
    }


async def _send_and_follow(platform: Platform, senders: list[Sender], console: Console) -> None:
    """Send every sender's list through the API and follow it until each message is final, or, for a
    paused sender, until its waiting mail stays put."""
    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    sem = asyncio.Semaphore(4)
    with progress:
        bars = {
            s.name: (
                progress.add_task(f"{s.name} accepted", total=len(s.recipients)),
                progress.add_task(f"{s.name} final", total=len(s.recipients)),
            )
            for s in senders
        }

        async def post(client: httpx.AsyncClient, sender: Sender, index: int, chunk: list[str]) -> None:
            await asyncio.sleep(index * sender.pace)
            async with sem:
                response = await client.post(
                    "/v1/messages", json={"messages": [_message(sender, r) for r in chunk]}
                )
            if response.status_code == 403 and response.json().get("type") == "/problems/account-paused":
                sender.refused += len(chunk)  # the platform paused this sender: it refuses new mail
                return
            response.raise_for_status()
            sender.accepted += len(chunk)
            progress.advance(bars[sender.name][0], len(chunk))

        clients = [
            httpx.AsyncClient(
                base_url=platform.api_url, headers={"Authorization": f"Bearer {s.token}"}, timeout=60
            )
            for s in senders
        ]
        try:
            posts = [
                asyncio.create_task(post(client, sender, n, sender.recipients[i : i + sender.batch]))
                for sender, client in zip(senders, clients, strict=True)
                for n, i in enumerate(range(0, len(sender.recipients), sender.batch))
            ]
            await _follow(platform, senders, posts, progress, {s.name: bars[s.name][1] for s in senders})
            await asyncio.gather(*posts)
        finally:
            for client in clients:
                await client.aclose()


async def _follow(
    platform: Platform,
    senders: list[Sender],
    posts: list[asyncio.Task[None]],
    progress: Progress,
    bars: dict[str, Any],
) -> None:
    deadline = time.monotonic() + 120
    still: dict[str, tuple[int, float]] = {}  # a paused sender's final count, and since when it holds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        done = all(p.done() for p in posts)
        for sender in senders:
            counts = await platform.core.db.run(queue_store.state_counts, sender.account_id)
            sender.final = sum(counts.get(s, 0) for s in FINAL)
            progress.update(bars[sender.name], completed=sender.final)
            if sender.final != still.get(sender.name, (-1, 0.0))[0]:
                still[sender.name] = (sender.final, time.monotonic())
        finished = []
        for sender in senders:
            if sender.final >= sender.accepted:
                finished.append(done)
                continue
            standing = await platform.core.reputation.standing(sender.account_id)
            paused = standing["streams"]["broadcast"]["state"] in HALTED
            finished.append(done and paused and time.monotonic() - still[sender.name][1] > 2.0)
        if all(finished):
            return


def render(result: DemoResult, console: Console) -> None:
    cols = ("delivered", "deferred", "bounced", "suppressed", "waiting")
    rows: dict[str, dict[str, int]] = {}
    for domain, states in sorted(result.per_domain.items()):
        rows[domain] = {
            "delivered": states.get("delivered", 0),
            "deferred": result.deferrals.get(domain, 0),
            "bounced": states.get("bounced", 0),
            "suppressed": states.get("suppressed", 0),
            "waiting": states.get("queued", 0) + states.get("deferred", 0),
        }
    table = Table(title="Demo: what happened to the mail", show_footer=True)
    table.add_column("provider", footer="total")
    for col in cols:
        table.add_column(col, justify="right", footer=str(sum(r[col] for r in rows.values())))
    for domain, row in rows.items():
        table.add_row(domain, *(str(row[c]) for c in cols))
    console.print(table)
    console.print(_senders_table(result.senders))
    healthy = result.senders[0]
    rate = result.final / result.seconds if result.seconds else 0.0
    console.print(
        f"{healthy.name}: {result.accepted} messages accepted, {result.final} reached a final state in "
        f"{result.seconds:.1f} s → [bold]{rate:.0f} messages/s[/]  (deferred counts deferrals; each was "
        "retried; waiting: held back by a paused stream)"
    )
    for sender in result.senders[1:]:
        state = sender.standing.get("streams", {}).get("broadcast", {}).get("state", "?")
        console.print(
            f"{sender.name}: {sender.accepted} accepted, {sender.refused} refused after the pause, broadcast "
            f"stream [bold]{state}[/]"
            + (f", review #{sender.review_id} waits for an operator" if sender.review_id else "")
        )
    if result.dmarc is not None:
        console.print("\n[bold]DMARC aggregate reports the receivers sent back[/]")
        console.print(render_dmarc(result.dmarc))
    logins = "\n".join(f"    {email:<26} {password}" for email, password in result.logins.items())
    console.print(
        "\n[bold]The dashboard[/] shows both senders, the pause and the review (an operator decides it)."
        f"\n  Logins for this demo (email, password):\n{logins}"
        "\n  See it now with `estafeta demo --open`, or serve this database and open "
        "http://127.0.0.1:8025/app/:"
        f"\n    ESTAFETA_DATABASE_URL=sqlite:///{result.database} ESTAFETA_SMTP__ENABLED=false estafeta serve"
        "\n\n[bold]Where next[/]\n"
        f"  • The demo database is kept at {result.database}; look inside with\n"
        f"    ESTAFETA_DATABASE_URL=sqlite:///{result.database} estafeta domains list\n"
        "    (and `estafeta domains dmarc acme.test` for the DMARC reports)\n"
        "  • Run the platform for real: `estafeta serve` (API and dashboard on http://127.0.0.1:8025)\n"
        "  • Play in the sandbox: `estafeta world`\n"
        "  • Operator docs: docs/ (DNS records, deployment, PostgreSQL, the dashboard)"
    )


def _senders_table(senders: list[Sender]) -> Table:
    table = Table(title="Senders against the limits (hard bounces ≤ 5%, complaints ≤ 0.1%)")
    for name in (
        "sender",
        "accepted",
        "delivered",
        "hard bounces",
        "complaints",
        "trap hits",
        "broadcast",
        "review",
    ):
        table.add_column(name, justify="left" if name in ("sender", "broadcast", "review") else "right")
    for sender in senders:
        m = sender.standing.get("metrics", {})
        t = sender.standing.get("thresholds", {})
        state = sender.standing.get("streams", {}).get("broadcast", {}).get("state", "?")
        over_b = m.get("bounce_rate", 0) > t.get("bounce_pause", 1)
        over_c = m.get("complaint_rate", 0) > t.get("complaint_pause", 1)
        table.add_row(
            sender.name,
            str(sender.accepted),
            str(m.get("delivered", 0)),
            f"[{'red' if over_b else 'green'}]{m.get('bounce_rate', 0):.2%}[/]",
            f"[{'red' if over_c else 'green'}]{m.get('complaint_rate', 0):.3%}[/]",
            str(m.get("trap_hits", 0)),
            f"[{'red' if state in HALTED else 'green'}]{state}[/]",
            f"#{sender.review_id} open" if sender.review_id else "—",
        )
    return table
