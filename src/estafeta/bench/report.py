"""Common output of every benchmark: a Rich table on the console and a JSON file."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def report(name: str, result: dict[str, Any], output: Path, console: Console) -> None:
    table = Table(title=f"estafeta bench {name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,.1f}" if isinstance(value, float) else str(value))
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
