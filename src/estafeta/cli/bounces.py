"""`estafeta bounces`: classify bounce and complaint messages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estafeta.cli.common import console

app = typer.Typer(help="Classify bounce and complaint messages.", no_args_is_help=True)


@app.command("classify")
def classify(
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
