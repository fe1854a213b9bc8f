"""The `estafeta` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from email_validator import EmailNotValidError, validate_email
from rich.console import Console
from rich.table import Table

from estafeta import __version__, admin, suppression
from estafeta.auth import create_admin_key
from estafeta.clock import SystemClock
from estafeta.config import Settings, load_settings
from estafeta.reputation import Reputation, ReviewError
from estafeta.store import accounts as account_store
from estafeta.store import audience as audience_store
from estafeta.store import reputation as reputation_store
from estafeta.store import suppressions as suppression_store
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
bounces_app = typer.Typer(help="Classify bounce and complaint messages.", no_args_is_help=True)
suppressions_app = typer.Typer(
    help="Search and edit suppression lists: an account's (--account) or the global one (--global).",
    no_args_is_help=True,
)
admin_app = typer.Typer(help="Platform-operator credentials.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(domains_app, name="domains")
app.add_typer(bench_app, name="bench")
app.add_typer(bounces_app, name="bounces")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(admin_app, name="admin")

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


def _account(db: Database, name_or_id: str) -> account_store.AccountRow:
    """The account named on the command line, or a clear error and exit code 1."""
    try:
        return admin.resolve_account(db, name_or_id)
    except admin.AdminError as exc:
        raise _fail(str(exc)) from exc


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


class Role(StrEnum):
    all = "all"
    front = "front"
    delivery = "delivery"


@app.command()
def serve(
    config: ConfigOption = None,
    role: Annotated[
        Role,
        typer.Option(
            help="all: everything in this process (and its delivery.processes children); front: API, SMTP "
            "relay, inbound listener, webhooks, campaigns and scheduler, without delivery; delivery: only a "
            "delivery engine, to add delivery capacity on the same database."
        ),
    ] = Role.all,
) -> None:
    """Run the platform: HTTP API, SMTP relay and delivery, until Ctrl-C or SIGTERM."""
    from estafeta.platform import Platform

    settings = _settings(config)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    log = logging.getLogger("estafeta")

    async def run() -> None:
        platform = Platform(settings)
        front = role != Role.delivery
        await platform.start(
            api=front,
            delivery=role != Role.front,
            smtp=front and settings.smtp.enabled,
            services=front,
        )
        if front:
            log.info("serving API on %s", platform.api_url)
        if platform.smtp_ports is not None:
            log.info(
                "SMTP relay on %s ports %d (STARTTLS) and %d (TLS)",
                settings.smtp.host,
                platform.smtp_ports.starttls,
                platform.smtp_ports.implicit_tls,
            )
        if role != Role.front and settings.delivery.processes:
            log.info("delivering from %d child processes", settings.delivery.processes)
        elif role != Role.front:
            log.info("delivering from this process")
        await _until_signal()
        log.info("stopping: finishing attempts under way, releasing the rest")
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
        console.print(
            f"Postmaster figures: {sim.postmaster_url}/<provider>/domains/<domain>/stats "
            "(set postmaster.sources to poll them)"
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
def accounts_create(
    name: str,
    email: Annotated[
        str | None, typer.Option(help="contact address for reputation notices (warnings, pauses)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create an account and its first API key (shown once)."""
    _, db = _db(config)
    now = SystemClock().now()
    if email is not None:
        try:
            email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise _fail(f"--email: {exc}") from exc
    try:
        account = admin.create_account(db, name, now)
    except admin.AdminError as exc:
        raise _fail(str(exc)) from exc
    if email is not None:
        db.call(reputation_store.set_contact, account.id, email)
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
    row = _account(db, account)
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
    row = _account(db, account)
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


# -- bounces and suppression lists ---------------------------------------------------------------
@bounces_app.command("classify")
def bounces_classify(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Raw messages (.eml).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for machines.")] = False,
) -> None:
    """Say for each message whether it is a hard or soft bounce (or none, or a complaint), why, for whom."""
    from estafeta.bounces.report import classify_files, render_json, render_table

    rows = classify_files(files)
    if as_json:
        typer.echo(render_json(rows))
    else:
        console.print(render_table(rows))


AccountScope = Annotated[str | None, typer.Option("--account", help="The account's list (name or id).")]
GlobalScope = Annotated[bool, typer.Option("--global", help="The global list, shared by every account.")]


def _scope(db: Database, account: str | None, global_: bool) -> int | None:
    """The list to work on: an account's id, or None for the global list."""
    if (account is None) == (not global_):
        raise _fail("name one list: --account NAME or --global")
    if global_:
        return None
    return _account(db, account or "").id


def _suppression_table(rows: list[suppression_store.SuppressionRow], title: str) -> Table:
    table = Table("value", "kind", "reason", "detail", "since", title=title)
    for row in rows:
        table.add_row(
            row.value, row.kind, row.reason, row.detail[:60], row.created_at.isoformat(timespec="seconds")
        )
    return table


def _list_value(text: str) -> suppression.Value:
    try:
        return suppression.parse_value(text)
    except suppression.SuppressionError as exc:
        raise _fail(exc.reason) from exc


@suppressions_app.command("list")
def suppressions_list(
    account: AccountScope = None,
    global_: GlobalScope = False,
    reason: Annotated[str | None, typer.Option(help="Only entries with this reason.")] = None,
    config: ConfigOption = None,
) -> None:
    """List a suppression list."""
    _, db = _db(config)
    scope = _scope(db, account, global_)
    rows = db.call(suppression_store.list_entries, scope, reason=reason)
    console.print(_suppression_table(rows, f"{len(rows)} entries"))


@suppressions_app.command("search")
def suppressions_search(
    query: Annotated[str, typer.Argument(help="Part of an address or domain.")],
    account: AccountScope = None,
    global_: GlobalScope = False,
    config: ConfigOption = None,
) -> None:
    """Find entries; for a whole address on an account's list, also say whether the global list covers it."""
    _, db = _db(config)
    scope = _scope(db, account, global_)
    rows = db.call(suppression_store.list_entries, scope, search=query)
    console.print(_suppression_table(rows, f"{len(rows)} entries matching {query!r}"))
    if scope is not None and "@" in query:
        entry = db.call(suppression.global_entry, _list_value(query))
        if entry is not None:
            console.print(f"The global list covers it: {entry.value} ({entry.reason}).")


@suppressions_app.command("add")
def suppressions_add(
    value: Annotated[str, typer.Argument(help="An address, or a domain for every address at it.")],
    account: AccountScope = None,
    global_: GlobalScope = False,
    reason: Annotated[str, typer.Option(help=f"One of {', '.join(suppression.REASONS)}.")] = "manual",
    note: Annotated[str, typer.Option(help="Kept in the audit trail.")] = "",
    config: ConfigOption = None,
) -> None:
    """Suppress an address or domain."""
    _, db = _db(config)
    scope = _scope(db, account, global_)
    parsed = _list_value(value)
    try:
        suppression.check_reason(reason)
    except suppression.SuppressionError as exc:
        raise _fail(exc.reason) from exc
    entry = suppression_store.NewSuppression(scope, parsed.kind, parsed.value, reason)
    added = db.call(suppression_store.add, entry, actor="cli", now=SystemClock().now(), note=note)
    console.print(f"{parsed.value} {'suppressed' if added else 'was suppressed already'}.")


@suppressions_app.command("remove")
def suppressions_remove(
    value: Annotated[str, typer.Argument(help="The address or domain to mail again.")],
    account: AccountScope = None,
    global_: GlobalScope = False,
    note: Annotated[str, typer.Option(help="Kept in the audit trail.")] = "",
    config: ConfigOption = None,
) -> None:
    """Remove an entry (the audit trail keeps who did it and when)."""
    _, db = _db(config)
    scope = _scope(db, account, global_)
    parsed = _list_value(value)
    removed = db.call(
        suppression_store.remove, scope, parsed.value, actor="cli", now=SystemClock().now(), note=note
    )
    if removed is None:
        raise _fail(f"{parsed.value} is not on that list")
    console.print(f"{removed.value} removed (it was suppressed for {removed.reason}).")


@suppressions_app.command("export")
def suppressions_export(
    account: AccountScope = None,
    global_: GlobalScope = False,
    output: Annotated[Path | None, typer.Option(help="CSV file to write; standard output if absent.")] = None,
    config: ConfigOption = None,
) -> None:
    """Write a list as CSV (value, kind, reason, detail, created_at)."""
    _, db = _db(config)
    scope = _scope(db, account, global_)
    text = suppression.to_csv(db.call(suppression_store.list_entries, scope))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@suppressions_app.command("import")
def suppressions_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a `value` column.")],
    account: AccountScope = None,
    global_: GlobalScope = False,
    config: ConfigOption = None,
) -> None:
    """Add every row of a CSV file (an export imports as it is); one bad row and nothing is imported."""
    _, db = _db(config)
    scope = _scope(db, account, global_)
    try:
        entries, errors = suppression.parse_csv(file.read_text(encoding="utf-8-sig"), scope)
    except (UnicodeDecodeError, suppression.SuppressionError) as exc:
        raise _fail(f"{file}: {exc}") from exc
    if errors:
        for error in errors:
            console.print(f"line {error.line}: {error.value!r}: {error.reason}")
        raise _fail(f"{len(errors)} row(s) are invalid; nothing was imported")
    result = db.call(suppression.import_entries, entries, actor="cli", now=SystemClock().now())
    console.print(f"{result.added} added, {result.already_listed} listed already.")


@admin_app.command("create-key")
def admin_create_key(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create a platform-admin key (shown once) for `/v1/admin/…`, e.g. the global suppression list."""
    _, db = _db(config)
    key = create_admin_key(db, name, SystemClock().now())
    console.print(f"Admin key (shown once, keep it secret): [bold green]{key.token}[/]")


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


# -- webhooks ------------------------------------------------------------------------------------
webhooks_app = typer.Typer(
    help="Webhook endpoints, their delivery log and replays (a running platform sends them).",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("list")
def webhooks_list(
    account: Annotated[str | None, typer.Option(help="Only this account (name or id).")] = None,
    config: ConfigOption = None,
) -> None:
    """List webhook endpoints."""
    from estafeta.store import webhooks as webhook_store

    _, db = _db(config)
    account_id = _account(db, account).id if account else None
    table = Table("id", "account", "url", "events", "enabled", "description")
    for row in db.call(webhook_store.list_endpoints, account_id):
        events = ", ".join(row.event_types) or "all"
        table.add_row(
            str(row.id), str(row.account_id), row.url, events, "yes" if row.enabled else "no", row.description
        )
    console.print(table)


@webhooks_app.command("add")
def webhooks_add(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    url: Annotated[str, typer.Argument(help="http(s) URL that receives the events.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="An event type to send (repeatable; default all)."),
    ] = None,
    description: Annotated[str, typer.Option(help="A label.")] = "",
    config: ConfigOption = None,
) -> None:
    """Add an endpoint and print its signing secret."""
    from estafeta.api.webhooks import check_event_types, check_reachable, check_url
    from estafeta.store import webhooks as webhook_store
    from estafeta.webhooks import new_secret

    settings, db = _db(config)
    try:
        row = admin.resolve_account(db, account)
        types = check_event_types(event or [])
        check_url(url)
        check_reachable(url, settings.webhooks)
    except (admin.AdminError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    created = db.call(
        webhook_store.create_endpoint, row.id, url, types, description, new_secret(), SystemClock().now()
    )
    console.print(f"Endpoint [bold]{created.id}[/] for {row.name}: {created.url}")
    console.print(f"Signing secret (verify webhook-signature with it): [bold green]{created.secret}[/]")


@webhooks_app.command("remove")
def webhooks_remove(
    endpoint: Annotated[int, typer.Argument(help="Endpoint id.")], config: ConfigOption = None
) -> None:
    """Remove an endpoint and its delivery log."""
    from estafeta.store import webhooks as webhook_store

    _, db = _db(config)
    if not db.call(webhook_store.delete_endpoint, None, endpoint):
        raise _fail(f"no webhook endpoint {endpoint}")
    console.print(f"Endpoint {endpoint} removed.")


@webhooks_app.command("log")
def webhooks_log(
    endpoint: Annotated[int, typer.Argument(help="Endpoint id.")],
    state: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    config: ConfigOption = None,
) -> None:
    """Show an endpoint's deliveries, newest first."""
    from estafeta.store import webhooks as webhook_store

    _, db = _db(config)
    if db.call(webhook_store.get_endpoint, None, endpoint) is None:
        raise _fail(f"no webhook endpoint {endpoint}")
    table = Table("id", "event", "type", "message", "state", "attempts", "status", "error", "last attempt")
    for d in db.call(webhook_store.list_deliveries, None, endpoint, state=state, limit=limit):
        table.add_row(
            str(d.id),
            str(d.event_id or ""),
            d.event_type,
            d.message_id or "",
            d.state,
            str(d.attempts),
            str(d.last_status or ""),
            d.last_error or "",
            d.last_attempt_at.isoformat(timespec="seconds") if d.last_attempt_at else "",
        )
    console.print(table)


@webhooks_app.command("replay")
def webhooks_replay(
    endpoint: Annotated[int, typer.Argument(help="Endpoint id.")],
    delivery: Annotated[list[int] | None, typer.Argument(help="Delivery ids (see `webhooks log`).")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Replay every failed delivery.")] = False,
    config: ConfigOption = None,
) -> None:
    """Send deliveries again (same body and webhook-id), with a fresh retry period."""
    from estafeta.store import webhooks as webhook_store

    _, db = _db(config)
    if db.call(webhook_store.get_endpoint, None, endpoint) is None:
        raise _fail(f"no webhook endpoint {endpoint}")
    ids = list(delivery or [])
    if failed:
        ids += [
            d.id
            for d in db.call(webhook_store.list_deliveries, None, endpoint, state="failed", limit=100_000)
        ]
    if not ids:
        raise _fail("name delivery ids or pass --failed")
    now = SystemClock().now()
    replayed = [i for i in ids if db.call(webhook_store.replay, None, endpoint, i, now) is not None]
    missing = sorted(set(ids) - set(replayed))
    console.print(f"{len(replayed)} deliveries queued again.")
    if missing:
        raise _fail(f"not replayed (unknown, or being sent right now): {', '.join(map(str, missing))}")


# -- lists and compliance -------------------------------------------------------------------------
lists_app = typer.Typer(
    help="Mailing lists: create them, import contacts from CSV, segment them.", no_args_is_help=True
)
app.add_typer(lists_app, name="lists")


def _resolve_list(db: Database, account_id: int, name_or_id: str) -> audience_store.ListRow:
    row = db.call(audience_store.get_list, account_id, int(name_or_id)) if name_or_id.isdigit() else None
    row = row or db.call(audience_store.find_list_by_name, account_id, name_or_id)
    if row is None:
        raise _fail(f"no list {name_or_id!r} in this account; see `estafeta lists list`")
    return row


@lists_app.command("create")
def lists_create(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    name: Annotated[str, typer.Argument(help="The list's name.")],
    from_address: Annotated[
        str, typer.Option("--from", help="From of the list's mail, e.g. 'News <n@ex.com>'.")
    ],
    single_opt_in: Annotated[
        bool, typer.Option("--single-opt-in", help="Do not ask new subscribers to confirm (not advised).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a list (double opt-in unless told otherwise)."""
    from estafeta.audience.lists import AudienceError, create_list

    _, db = _db(config)
    try:
        row = admin.resolve_account(db, account)
        created = asyncio.run(
            create_list(db, row.id, name, from_address, not single_opt_in, SystemClock().now())
        )
    except (admin.AdminError, AudienceError) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"List [bold]{created.name}[/] (id {created.id}) created; hosted form at /f/{created.public_id}"
    )


@lists_app.command("list")
def lists_list(
    account: Annotated[str, typer.Argument(help="Account name or id.")], config: ConfigOption = None
) -> None:
    """The account's lists with their subscribers by status."""
    _, db = _db(config)
    row = _account(db, account)
    table = Table("id", "name", "from", "double opt-in", "subscribed", "unconfirmed", "unsubscribed")
    for lst in db.call(audience_store.list_lists, row.id):
        counts = lst.counts
        table.add_row(
            str(lst.id),
            lst.name,
            lst.from_address,
            "yes" if lst.double_opt_in else "no",
            *(str(counts.get(s, 0)) for s in ("subscribed", "unconfirmed", "unsubscribed")),
        )
    console.print(table)


segments_app = typer.Typer(
    help="Segments: a list's contacts filtered by their attributes (campaigns can target one).",
    no_args_is_help=True,
)
lists_app.add_typer(segments_app, name="segments")


@segments_app.command("create")
def segments_create(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    list_name: Annotated[str, typer.Argument(metavar="LIST", help="List name or id.")],
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    where: Annotated[
        list[str],
        typer.Option(
            "--where",
            help="A condition, repeatable: 'plan = pro', 'age >= 30', 'city ~ york' (contains), "
            "'country in ES,PT', 'phone exists', 'phone missing'; also != > < <=.",
        ),
    ],
    any_: Annotated[
        bool, typer.Option("--any", help="Contacts meeting any condition (default: all of them).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a segment of a list and show how many subscribed contacts it holds now."""
    from estafeta.audience import segments

    _, db = _db(config)
    row = _account(db, account)
    mailing_list = _resolve_list(db, row.id, list_name)
    try:
        conditions = [segments.parse_expression(text, i) for i, text in enumerate(where)]
        segments.parse_conditions(conditions)
    except segments.SegmentError as exc:
        raise _fail(str(exc)) from exc
    segment = db.call(
        audience_store.create_segment,
        row.id,
        mailing_list.id,
        name,
        "any" if any_ else "all",
        conditions,
        SystemClock().now(),
    )
    size = asyncio.run(segments.subscribers(db, segment))
    console.print(
        f"Segment [bold]{segment.name}[/] (id {segment.id}) of {mailing_list.name}: {size} subscribed "
        f"contacts now; send a campaign to it with segment_id {segment.id}"
    )


@segments_app.command("list")
def segments_list(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    list_name: Annotated[str, typer.Argument(metavar="LIST", help="List name or id.")],
    config: ConfigOption = None,
) -> None:
    """The list's segments, their conditions and how many subscribed contacts each holds now."""
    from estafeta.audience import segments

    _, db = _db(config)
    row = _account(db, account)
    mailing_list = _resolve_list(db, row.id, list_name)
    table = Table(
        "id", "name", "match", "conditions", "subscribers", title=f"Segments of {mailing_list.name}"
    )
    for segment in db.call(audience_store.list_segments, row.id, mailing_list.id):
        table.add_row(
            str(segment.id),
            segment.name,
            segment.match,
            "\n".join(segments.describe(c) for c in segment.conditions),
            str(asyncio.run(segments.subscribers(db, segment))),
        )
    console.print(table)


@lists_app.command("import")
def lists_import(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    list_name: Annotated[str, typer.Argument(metavar="LIST", help="List name or id.")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="UTF-8 CSV with an `email` column.")
    ],
    consent_source: Annotated[str, typer.Option(help="Where these people agreed, e.g. 'checkout 2025'.")],
    confirmed: Annotated[
        bool,
        typer.Option("--confirmed", help="They already confirmed their addresses: no confirmation mail."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Import contacts: a progress bar, then the validation report and any signs of a bought list."""
    import secrets

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from estafeta.accept import Accepter
    from estafeta.audience.consent import Consent, ConsentRecord
    from estafeta.audience.importer import CsvError, import_csv
    from estafeta.audience.links import Links
    from estafeta.audience.tokens import Tokens

    settings, db = _db(config)
    row = _account(db, account)
    mailing_list = _resolve_list(db, row.id, list_name)
    if mailing_list.double_opt_in and not confirmed and settings.public_url is None:
        raise _fail("set public_url (confirmation links point there) or pass --confirmed")
    clock = SystemClock()
    # The server's secret, so that links made here work there.
    secret = db.call(account_store.set_state_if_absent, "audience_secret", secrets.token_hex(32))
    links = Links(
        Tokens(bytes.fromhex(secret), clock), lambda: settings.public_url or "", settings.return_path_domain
    )
    consent = Consent(db, settings, clock, Accepter(db, settings, clock, lambda: None), links)
    text = file.read_text(encoding="utf-8")
    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("import", total=None)
        try:
            report = asyncio.run(
                import_csv(
                    consent,
                    row.id,
                    mailing_list,
                    text,
                    ConsentRecord(consent_source, None, confirmed),
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            )
        except CsvError as exc:
            raise _fail(str(exc)) from exc
    summary = Table(
        "rows", "added", "already on list", "kept unsubscribed", "to confirm", "duplicates", "invalid"
    )
    summary.add_row(
        *(str(v) for v in (report.rows, report.added, report.already_on_list, report.kept_unsubscribed)),
        str(report.awaiting_confirmation),
        str(report.duplicates),
        str(len(report.invalid)),
    )
    console.print(summary)
    if report.invalid:
        invalid = Table("line", "value", "reason", title="Invalid rows")
        for problem in report.invalid[:50]:
            invalid.add_row(str(problem.line), problem.value, problem.reason)
        console.print(invalid)
    for flag in report.flags:
        console.print(f"[yellow]Warning ({flag.code}):[/] {flag.message}")


@app.command("lint")
def lint(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help=".eml files to check.")],
    stream: Annotated[
        str | None, typer.Option(help="transactional or broadcast; default: judged from each file's headers.")
    ] = None,
) -> None:
    """Check messages against the sender guidelines; exit 1 when any finding is an error."""
    from estafeta.compliance.linter import lint_files

    if stream not in (None, "transactional", "broadcast"):
        raise _fail("--stream must be transactional or broadcast")
    results = lint_files([(str(f), f.read_bytes()) for f in files], stream)  # type: ignore[arg-type]
    failed = False
    for name, findings in results:
        if not findings:
            console.print(f"[green]{name}: no findings[/]")
            continue
        table = Table("rule", "severity", "field", "message", title=name, show_lines=True)
        for f in findings:
            colour = "red" if f.severity == "error" else "yellow"
            table.add_row(f.rule, f"[{colour}]{f.severity}[/]", f.field, f.message)
            failed = failed or f.severity == "error"
        console.print(table)
    if failed:
        raise typer.Exit(1)


review_app = typer.Typer(
    help="The reputation review queue: paused or flagged accounts waiting for an operator.",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")


def _reputation(config: Path | None) -> Reputation:
    settings, db = _db(config)
    return Reputation(db, settings, SystemClock())


@review_app.command("list")
def review_list(
    state: Annotated[str, typer.Option(help="open | approved | rejected | all")] = "open",
    config: ConfigOption = None,
) -> None:
    """List reviews (open ones by default)."""
    reputation = _reputation(config)
    rows = reputation.db.call(reputation_store.list_reviews, None if state == "all" else state)
    table = Table("id", "account", "stream", "state", "opened", "reason")
    for row in rows:
        table.add_row(
            str(row.id),
            str(row.account_id),
            row.stream,
            row.state,
            row.created_at.isoformat(timespec="seconds"),
            row.reason,
        )
    console.print(table)


@review_app.command("show")
def review_show(review_id: int, config: ConfigOption = None) -> None:
    """A review with the account's metrics, recent bounces and complaints, sample messages, answers."""
    reputation = _reputation(config)
    try:
        detail = reputation.db.call(reputation.detail, review_id)
    except ReviewError as exc:
        raise _fail(str(exc)) from exc
    console.print_json(json.dumps(detail, default=str))


def _decide(review_id: int, approve: bool, note: str, config: Path | None) -> None:
    reputation = _reputation(config)
    action = reputation.approve if approve else reputation.reject
    try:
        result = asyncio.run(action(review_id, "cli", note))
    except ReviewError as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"Review {review_id} {result['state']}; {result['messages_moved']} held message recipient(s) "
        f"{'released' if approve else 'cancelled'}."
    )


NoteOption = Annotated[str, typer.Option(help="why; kept in the audit trail")]


@review_app.command("approve")
def review_approve(review_id: int, note: NoteOption = "", config: ConfigOption = None) -> None:
    """Approve: resume sending (a warm-up review also raises the limit) and release held messages."""
    _decide(review_id, True, note, config)


@review_app.command("reject")
def review_reject(review_id: int, note: NoteOption = "", config: ConfigOption = None) -> None:
    """Reject: the reviewed stream stays suspended and held messages are cancelled."""
    _decide(review_id, False, note, config)
