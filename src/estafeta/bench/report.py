"""Common output of every benchmark: a Rich table on the console and a JSON file."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _cell(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def report(name: str, result: dict[str, Any], output: Path, console: Console) -> None:
    """Print `result` as a table (a column per run when every value is itself a result) and write it."""
    table = Table(title=f"estafeta bench {name}")
    table.add_column("metric")
    runs = list(result.values())
    if runs and all(isinstance(run, dict) for run in runs):
        for column in result:
            table.add_column(column, justify="right")
        for key in dict.fromkeys(k for run in runs for k in run):
            table.add_row(key, *(_cell(run.get(key, "")) for run in runs))
    else:
        table.add_column("value", justify="right")
        for key, value in result.items():
            table.add_row(key, _cell(value))
    console.print(table)
    output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "system": platform.platform()},
        "result": result,
    }
    output.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"written to {output}")
