"""The `estafeta` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from estafeta import __version__, admin
from estafeta.clock import SystemClock
from estafeta.config import Settings, load_settings
from estafeta.store import accounts as account_store
from estafeta.store.db import Database

app = typer.Typer(
    help="Estafeta: send transactional and bulk email from your own platform.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
accounts_app = typer.Typer(help="Create and list accounts and their API keys.", no_args_is_help=True)
domains_app = typer.Typer(
    help="Register sending domains and show the DNS records to publish.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="Measure the platform's speed (results as a table and a JSON file).", no_args_is_help=True
)
app.add_typer(accounts_app, name="accounts")
app.add_typer(domains_app, name="domains")
app.add_typer(bench_app, name="bench")

console = Console()
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (ESTAFETA_* variables win over it).")
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]Settings error:[/] {exc}")
        raise typer.Exit(2) from exc


def _db(config: Path | None) -> tuple[Settings, Database]:
    settings = _settings(config)
    db = Database(settings.database_url)
    db.migrate()
    return settings, db


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]Error:[/] {message}")
    return typer.Exit(1)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"estafeta {__version__}")
        raise typer.Exit()


class _JsonLogs(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


async def _until_signal() -> None:
    """Wait for Ctrl-C or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the platform: HTTP API, SMTP relay and delivery workers, until Ctrl-C or SIGTERM."""
    from estafeta.platform import Platform

    settings = _settings(config)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)

    async def run() -> None:
        platform = Platform(settings)
        await platform.start(smtp=settings.smtp.enabled)
        logging.getLogger("estafeta").info("serving API on %s", platform.api_url)
        await _until_signal()
        logging.getLogger("estafeta").info("stopping: finishing attempts under way, releasing the rest")
        await platform.stop()

    asyncio.run(run())


@app.command()
def world(
    smtp_port: Annotated[
        int, typer.Option(help="Port every MX server listens on (0 = any free port).")
    ] = 2525,
    dns_port: Annotated[
        int, typer.Option(help="Port of the DNS server on 127.0.0.1 (0 = any free port).")
    ] = 5353,
) -> None:
    """Run the simulated internet alone: DNS for *.test and the mailbox providers on 127.0.0.x."""
    from estafeta.world import World

    async def run() -> None:
        sim = World(dns_port=dns_port, smtp_port=smtp_port)
        await sim.start()
        table = Table(title="Simulated internet")
        table.add_column("domain")
        table.add_column("behaviour")
        for name, behaviour in sim.describe():
            table.add_row(name, behaviour)
        console.print(table)
        host, port = sim.dns_address
        console.print(
            f"DNS on {host}:{port}, MX servers on port {sim.smtp_port}. Point a platform at it with\n"
            f"  ESTAFETA_DNS_SERVERS='[\"{host}:{port}\"]' ESTAFETA_DELIVERY__SMTP_PORT={sim.smtp_port} "
            "estafeta serve\nCtrl-C stops."
        )
        await _until_signal()
        await sim.stop()

    asyncio.run(run())


@app.command()
def demo(
    messages: Annotated[
        int, typer.Option("--messages", "-n", min=1, max=100_000, help="How many messages to send.")
    ] = 3000,
    workdir: Annotated[Path, typer.Option(help="Where the demo's SQLite file is kept.")] = Path(
        "estafeta-demo"
    ),
) -> None:
    """Run the whole platform against the simulated internet and show what happened to the mail."""
    from estafeta.demo import render, run_demo

    try:
        result = asyncio.run(run_demo(messages, workdir, console))
    except KeyboardInterrupt:
        console.print(
            "\n[yellow]Interrupted.[/] Mail already accepted is kept in "
            f"{workdir / 'estafeta-demo.db'}; resume delivering it with\n"
            f"  ESTAFETA_DATABASE_URL=sqlite:///{workdir / 'estafeta-demo.db'} estafeta serve"
        )
        raise typer.Exit(130) from None
    render(result, console)


# -- accounts ------------------------------------------------------------------------------------
@accounts_app.command("create")
def accounts_create(name: str, config: ConfigOption = None) -> None:
    """Create an account and its first API key (shown once)."""
    _, db = _db(config)
    now = SystemClock().now()
    try:
        account = admin.create_account(db, name, now)
    except admin.AdminError as exc:
        raise _fail(str(exc)) from exc
    key = admin.new_api_key(db, account.id, "default", now)
    console.print(f"Account [bold]{account.name}[/] (id {account.id}) created.")
    console.print(f"API key (shown once, keep it secret): [bold green]{key.token}[/]")


@accounts_app.command("list")
def accounts_list(config: ConfigOption = None) -> None:
    """List accounts."""
    _, db = _db(config)
    table = Table("id", "name", "status", "created")
    for row in db.call(account_store.list_accounts):
        table.add_row(str(row.id), row.name, row.status, row.created_at.isoformat(timespec="seconds"))
    console.print(table)


@accounts_app.command("api-key")
def accounts_api_key(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create another API key for an account (shown once)."""
    _, db = _db(config)
    try:
        row = admin.resolve_account(db, account)
    except admin.AdminError as exc:
        raise _fail(str(exc)) from exc
    key = admin.new_api_key(db, row.id, name, SystemClock().now())
    console.print(f"API key for {row.name} (shown once): [bold green]{key.token}[/]")


@accounts_app.command("smtp-credentials")
def accounts_smtp_credentials(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    config: ConfigOption = None,
) -> None:
    """Create a username and password for the SMTP relay (password shown once)."""
    from estafeta.smtp import create_smtp_credential

    settings, db = _db(config)
    try:
        row = admin.resolve_account(db, account)
    except admin.AdminError as exc:
        raise _fail(str(exc)) from exc
    credential = asyncio.run(create_smtp_credential(db, row.id, SystemClock().now()))
    smtp = settings.smtp
    console.print(f"SMTP credential for {row.name} (password shown once, keep it secret):")
    console.print(f"  username: [bold]{credential.username}[/]")
    console.print(f"  password: [bold green]{credential.password}[/]")
    console.print(
        f"  server:   {settings.hostname}, port {smtp.starttls_port} (STARTTLS) or {smtp.implicit_tls_port} "
        "(SSL/TLS), authentication PLAIN or LOGIN"
    )


# -- domains -------------------------------------------------------------------------------------
def _records_table(db: Database, settings: Settings, row: account_store.DomainRow) -> Table:
    table = Table("name", "type", "value", "purpose", title=f"DNS records for {row.name}")
    for rec in admin.dns_records(row, settings):
        table.add_row(rec.name, rec.type, rec.value, rec.purpose)
    return table


@domains_app.command("add")
def domains_add(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    domain: Annotated[str, typer.Argument(help="Sending domain, e.g. mail.example.com (IDN allowed).")],
    algorithm: Annotated[str | None, typer.Option(help="rsa-sha256 (default) or ed25519-sha256.")] = None,
    config: ConfigOption = None,
) -> None:
    """Register a sending domain, generate its DKIM key and print the DNS records to publish."""
    settings, db = _db(config)
    if algorithm not in (None, "rsa-sha256", "ed25519-sha256"):
        raise _fail("--algorithm must be rsa-sha256 or ed25519-sha256")
    try:
        row = admin.resolve_account(db, account)
        domain_row, _ = admin.add_domain(db, settings, row.id, domain, SystemClock().now(), algorithm)
    except admin.AdminError as exc:
        raise _fail(str(exc)) from exc
    console.print(_records_table(db, settings, domain_row))


@domains_app.command("list")
def domains_list(config: ConfigOption = None) -> None:
    """List sending domains."""
    _, db = _db(config)
    table = Table("domain", "account", "DKIM selector", "algorithm", "added")
    for row in db.call(account_store.list_domains):
        table.add_row(
            row.name,
            str(row.account_id),
            row.dkim_selector,
            row.dkim_algorithm,
            row.created_at.isoformat(timespec="seconds"),
        )
    console.print(table)


@domains_app.command("dns")
def domains_dns(domain: str, config: ConfigOption = None) -> None:
    """Show the DNS records a sending domain must publish."""
    settings, db = _db(config)
    row = db.call(account_store.find_domain, admin.normalise_domain(domain))
    if row is None:
        raise _fail(f"domain {domain} is not registered")
    console.print(_records_table(db, settings, row))


# -- benchmarks ----------------------------------------------------------------------------------
@bench_app.command("pipeline")
def bench_pipeline(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100, max=200_000)] = 5000,
    batch: Annotated[int, typer.Option(min=1, max=500, help="Messages per API request.")] = 100,
    algorithm: Annotated[str, typer.Option(help="DKIM algorithm.")] = "rsa-sha256",
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/pipeline.json"),
) -> None:
    """Messages/second from API accept to the receiver's 250, DKIM on, SQLite."""
    from estafeta.bench.pipeline import run_pipeline
    from estafeta.bench.report import report

    result = asyncio.run(run_pipeline(messages=messages, batch=batch, algorithm=algorithm, console=console))
    report("pipeline", result, output, console)


@bench_app.command("smtp")
def bench_smtp(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100, max=200_000)] = 3000,
    sessions: Annotated[int, typer.Option(min=1, max=64, help="Parallel SMTP sessions.")] = 8,
    algorithm: Annotated[str, typer.Option(help="DKIM algorithm.")] = "rsa-sha256",
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/smtp.json"),
) -> None:
    """Messages/second accepted through the SMTP relay (STARTTLS, AUTH, DKIM on, SQLite)."""
    from estafeta.bench.report import report
    from estafeta.bench.smtp import run_smtp

    result = asyncio.run(run_smtp(messages=messages, sessions=sessions, algorithm=algorithm, console=console))
    report("smtp", result, output, console)
