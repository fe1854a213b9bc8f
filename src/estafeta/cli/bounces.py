"""`estafeta bounces`: classify bounce and complaint messages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estafeta.cli.common import ConfigOption, console, load

app = typer.Typer(help="Classify bounce and complaint messages.", no_args_is_help=True)


@app.command("classify")
def classify(
    files: Annotated[
        list[Path],
        typer.Argument(
            exists=True, dir_okay=False, help="Raw messages (.eml), SMTP replies, DSN fields or SES JSON."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for machines.")] = False,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Show which rule and which words or fields decided each verdict."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Say for each file whether it is a hard or soft bounce (or none, or a complaint), why, for whom, and
    what it suppresses (global, account or none) under the configured suppression settings."""
    from estafeta.bounces.report import classify_files, render_explanations, render_json, render_table
    from estafeta.suppression import policy

    rows = classify_files(files, policy(load(config).suppression))
    if as_json:
        typer.echo(render_json(rows, explain=explain))
    elif explain:
        console.print(render_explanations(rows))
    else:
        console.print(render_table(rows))
