"""`estafeta domains`: register sending domains and show the DNS records to publish."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from estafeta.cli.common import AccountArgument, ConfigOption, account, console, fail, open_core, run
from estafeta.domains import DomainError, DomainRow, dns_records

app = typer.Typer(help="Register sending domains and show the DNS records to publish.", no_args_is_help=True)


def _records_table(row: DomainRow) -> Table:
    table = Table("name", "type", "value", "purpose", title=f"DNS records for {row.name}")
    for rec in dns_records(row):
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
    console.print(_records_table(domain_row))


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
    console.print(_records_table(row))
