"""`estafeta domains`: register sending domains, show the DNS records to publish, verify them, and show
what receivers' DMARC reports say about them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from estafeta.audit import cli_actor
from estafeta.cli.common import (
    AccountArgument,
    ConfigOption,
    account,
    console,
    fail,
    json_text,
    open_core,
    run,
)
from estafeta.config import Settings
from estafeta.dkim_keys import DkimKeyRow, KeyStatus
from estafeta.domains import DnsRecord, DomainError, DomainRow, dns_records
from estafeta.reports.dmarc_table import render
from estafeta.verification.service import DomainStatus

app = typer.Typer(help="Register sending domains and show the DNS records to publish.", no_args_is_help=True)


_STYLES = {"ok": "green", "missing": "red", "wrong": "red", "unknown": "yellow"}


def _verification_table(status: DomainStatus) -> Table:
    stops = status.sending_stops_at
    title = f"{status.domain}: {status.state}" + (
        f" (mail refused from {stops:%Y-%m-%d %H:%M} UTC)" if stops else ""
    )
    table = Table(title=title, show_lines=True)
    for column in ("check", "status", "expected", "found"):
        table.add_column(column, overflow="fold")
    for check in status.report.checks if status.report else []:
        style = _STYLES[check.status] if check.required else ("green" if check.status == "ok" else "yellow")
        table.add_row(
            f"{check.check}\n{check.name} {check.type}",
            f"[{style}]{check.status}[/]" + ("" if check.required else " (advice)") + f"\n{check.detail}",
            check.expected,
            "\n".join(check.found) or "—",
        )
    return table


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
        domain_row, _ = run(core.domains.add(row.id, domain, algorithm, actor=cli_actor()))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    console.print(_records_table(domain_row, core.settings))
    status = run(core.verification.status(domain_row.name))
    if status.may_send:
        console.print(f"{domain_row.name} is verified: its mail may be sent.")
    else:
        console.print(
            f"{domain_row.name} is {status.state}: publish the records above, then run "
            f"`estafeta domains verify {domain_row.name}`. Mail from it is refused until it verifies."
        )


@app.command("verify")
def verify(
    domain: Annotated[str, typer.Argument(help="A registered sending domain.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for machines.")] = False,
    config: ConfigOption = None,
) -> None:
    """Check the domain's DNS records now (DKIM, DMARC and alignment are required; SPF, the return path and
    tracking are advice); exit code 1 unless the domain is verified (a failing one still sends, for now)."""
    core = open_core(config)
    try:
        status = run(core.verification.verify(domain, actor=cli_actor()))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json_text(status.as_json(), indent=2))
    else:
        console.print(_verification_table(status))
        if status.report and status.report.problems():
            console.print("To fix: " + "; ".join(status.report.problems()))
    if status.state != "verified":
        raise typer.Exit(1)


@app.command("list")
def list_domains(config: ConfigOption = None) -> None:
    """List sending domains."""
    core = open_core(config)
    table = Table("domain", "account", "state", "signing with (selector: algorithm)", "added")
    for row in run(core.domains.list()):
        table.add_row(
            row.name,
            str(row.account_id),
            run(core.verification.status(row.name)).state,
            ", ".join(f"{k.selector}: {k.algorithm}" for k in row.keys if k.state == "active"),
            row.created_at.isoformat(timespec="seconds"),
        )
    console.print(table)


def _when(moment: object) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else ""  # type: ignore[attr-defined]


def _new_key(domain: DomainRow, key: DkimKeyRow, record: DnsRecord) -> None:
    console.print(f"New {key.algorithm} key for {domain.name} under selector {key.selector} (pending).")
    console.print("Publish this record; the key signs once the scheduled check sees it in DNS:")
    typer.echo(f'{record.name}. {record.type} "{record.value}"')  # one line, whatever the terminal's width


@app.command("rotate-key")
def rotate_key(
    domain: Annotated[str, typer.Argument(help="A registered sending domain.")],
    algorithm: Annotated[
        str | None, typer.Option(help="The key to replace when the domain signs with two algorithms.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a new dated selector replacing the domain's key; print the record to publish."""
    core = open_core(config)
    try:
        row, key, record = run(core.dkim_keys.rotate(domain, algorithm, actor=cli_actor()))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    _new_key(row, key, record)
    console.print("The old key stays published until no unfinished message carries its signature.")


@app.command("add-key")
def add_key(
    domain: Annotated[str, typer.Argument(help="A registered sending domain.")],
    algorithm: Annotated[str, typer.Option(help="rsa-sha256 or ed25519-sha256.")],
    config: ConfigOption = None,
) -> None:
    """Sign with a second algorithm as well (dual signing): a new key, used once its record is in DNS."""
    core = open_core(config)
    try:
        row, key, record = run(core.dkim_keys.add(domain, algorithm, actor=cli_actor()))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    _new_key(row, key, record)


def keys_json(statuses: list[KeyStatus]) -> list[dict[str, object]]:
    return [
        {
            "selector": s.key.selector,
            "algorithm": s.key.algorithm,
            "state": s.key.state,
            "record": {"name": s.record.name, "type": s.record.type, "value": s.record.value},
            "created_at": s.key.created_at,
            "activated_at": s.key.activated_at,
            "retiring_at": s.key.retiring_at,
            "retired_at": s.key.retired_at,
            "unfinished_deliveries": s.unfinished,
            "advice": s.advice,
        }
        for s in statuses
    ]


@app.command("keys")
def keys(
    domain: Annotated[str, typer.Argument(help="A registered sending domain.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for machines.")] = False,
    config: ConfigOption = None,
) -> None:
    """List the domain's DKIM keys: which sign, which wait for DNS, which may leave DNS."""
    core = open_core(config)
    try:
        row, statuses = run(core.dkim_keys.keys(domain))
    except DomainError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json_text(keys_json(statuses), indent=2))
        return
    table = Table(
        "selector",
        "algorithm",
        "state",
        "created",
        "active since",
        "retired",
        "what to do",
        title=f"DKIM keys of {row.name}",
    )
    for s in statuses:
        table.add_row(
            s.key.selector,
            s.key.algorithm,
            s.key.state,
            _when(s.key.created_at),
            _when(s.key.activated_at),
            _when(s.key.retired_at),
            s.advice,
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
        typer.echo(json_text(summary.as_json(), indent=2))
    else:
        console.print(render(summary))
