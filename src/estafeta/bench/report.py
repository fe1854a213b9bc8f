"""Common output of every benchmark: a Rich table on the console and a JSON file."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def _cell(value: Any) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.2f}" if abs(value) < 10 else f"{value:,.1f}"  # a ratio of 0.98 is not 1.0


def _longest_word(texts: Iterable[str]) -> int:
    return max((len(word) for text in texts for word in text.split()), default=0)


def report(name: str, result: dict[str, Any], output: Path, console: Console) -> None:
    """Print `result` as a table and write it as JSON. Several results (every value itself a result) are
    laid out the way that takes fewer columns: a column per run (a few backends, many metrics) or a row
    per run (`compare`'s ten), so that the table still reads on an 80-column terminal or a CI log."""
    runs = list(result.values())
    if runs and all(isinstance(run, dict) for run in runs):
        metrics = list(dict.fromkeys(k for run in runs for k in run))
        table = (
            _run_rows(name, result, metrics)
            if len(runs) > len(metrics)
            else _run_columns(name, result, metrics)
        )
    else:
        table = Table(title=f"estafeta bench {name}")
        table.add_column("metric")
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


def _run_columns(name: str, result: dict[str, dict[str, Any]], metrics: list[str]) -> Table:
    table = Table(title=f"estafeta bench {name}")
    table.add_column("metric")
    for column in result:
        table.add_column(column, justify="right")
    for metric in metrics:
        table.add_row(metric, *(_cell(run.get(metric, "")) for run in result.values()))
    return table


def _run_rows(name: str, result: dict[str, dict[str, Any]], metrics: list[str]) -> Table:
    """A row per run; a metric with one value in every run that has it (the message count) is said once,
    under the table."""
    table = Table(title=f"estafeta bench {name}", box=box.SIMPLE_HEAD)  # no inner borders: more room
    having = {m: [run[m] for run in result.values() if m in run] for m in metrics}
    shared = {
        m: values[0] for m, values in having.items() if len(values) > 1 and len(set(map(str, values))) == 1
    }
    metrics = [m for m in metrics if m not in shared]
    cells = {label: [_cell(run.get(metric, "")) for metric in metrics] for label, run in result.items()}
    # Each column as wide as its longest value (a load average's three figures stay on one line) or its
    # name's longest word: names wrap at spaces, values never do.
    table.add_column("run", min_width=_longest_word(result))
    for at, metric in enumerate(metrics):
        header = metric.replace("_", " ")
        width = max(max(len(row[at]) for row in cells.values()), _longest_word([header]))
        table.add_column(header, justify="right", min_width=width, max_width=width)
    for label, row in cells.items():
        table.add_row(label, *row)
    table.caption = ", ".join(
        f"{metric.replace('_', ' ')}: {_cell(value)}" for metric, value in shared.items()
    )
    return table
