"""`estafeta domains`: register sending domains, show the DNS records to publish and what receivers'
DMARC reports say about them."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from estafeta.cli.common import AccountArgument, ConfigOption, account, console, fail, open_core, run
from estafeta.config import Settings
from estafeta.domains import DomainError, DomainRow, dns_records
from estafeta.reports.dmarc_table import render

app = typer.Typer(help="Register sending domains and show the DNS records to publish.", no_args_is_help=True)


def _records_table(row: DomainRow, settings: Settings) -> Table:
    table = Table("name", "type", "value", "purpose", title=f"DNS records for {row.name}")
    for rec in dns_records(row, settings):
        table.add_row(rec.name, rec.type, rec.value, rec.purpose)
    return table


@app.command("add")
def add(
    name_or_id: AccountArgument,
    domain: Annotated[str, typer.Argument(help="Sending domain, e.g. mail.example.com (IDN allowed).")],
    algorithm: Annotated[str | None, typer.Option(help="rsa-sha256 (default) or ed25519-sha256.")] = None,
    config: ConfigOption = None,
) -> None:
    """Register a sending domain, generate its DKIM key and print the DNS records to publish."""
    core = open_core(config)
    row = account(core, name_or_id)
    try:
        domain_row, _ = run(core.domains.add(row.id, domain, algorithm))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    console.print(_records_table(domain_row, core.settings))


@app.command("list")
def list_domains(config: ConfigOption = None) -> None:
    """List sending domains."""
    core = open_core(config)
    table = Table("domain", "account", "DKIM selector", "algorithm", "added")
    for row in run(core.domains.list()):
        table.add_row(
            row.name,
            str(row.account_id),
            row.dkim_selector,
            row.dkim_algorithm,
            row.created_at.isoformat(timespec="seconds"),
        )
    console.print(table)


@app.command("dns")
def dns(domain: str, config: ConfigOption = None) -> None:
    """Show the DNS records a sending domain must publish."""
    core = open_core(config)
    try:
        row = run(core.domains.lookup(domain))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    console.print(_records_table(row, core.settings))


@app.command("dmarc")
def dmarc(
    domain: Annotated[str, typer.Argument(help="A registered sending domain.")],
    days: Annotated[int, typer.Option(min=1, max=400, help="Reports that ended in the last N days.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for machines.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show what receivers' DMARC reports say: sources, volumes, SPF/DKIM pass rates, unknown senders."""
    core = open_core(config)
    try:
        row = run(core.domains.lookup(domain))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    summary = run(core.dmarc.summary(row.name, days))
    if as_json:
        typer.echo(json.dumps(summary.as_json(), indent=2))
    else:
        console.print(render(summary))
