"""`estafeta doctor`: check the whole deployment and print what to fix."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.table import Table

from estafeta import doctor as checks
from estafeta.cli.common import ConfigOption, console, load, run

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for machines.")] = False,
    config: ConfigOption = None,
) -> None:
    """Check the deployment: database, clock, ports, TLS certificate, reverse DNS and HELO, SPF, the inbound
    MX and each sending domain's records. Exits 1 when any check fails."""
    settings = load(config)
    rows = run(checks.run(settings))
    failed = checks.failed(rows)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [dataclasses.asdict(row) for row in rows]}, indent=2))
    else:
        table = Table(title="estafeta doctor")
        for column in ("check", "target", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")  # names and records are shown whole
        for row in rows:
            table.add_row(row.check, row.target, f"[{STYLE[row.status]}]{row.status}[/]", row.detail, row.fix)
        console.print(table)
        counts = {status: sum(row.status == status for row in rows) for status in STYLE}
        console.print(", ".join(f"{n} {status}" for status, n in counts.items()))
    if failed:
        raise typer.Exit(1)
