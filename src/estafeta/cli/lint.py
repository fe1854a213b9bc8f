"""`estafeta lint`: check messages against the sender guidelines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from estafeta.cli.common import console, fail


def lint(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help=".eml files to check.")],
    stream: Annotated[
        str | None, typer.Option(help="transactional or broadcast; default: judged from each file's headers.")
    ] = None,
) -> None:
    """Check messages against the sender guidelines; exit 1 when any finding is an error."""
    from estafeta.compliance.linter import lint_files

    if stream not in (None, "transactional", "broadcast"):
        raise fail("--stream must be transactional or broadcast")
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
