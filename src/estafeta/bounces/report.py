"""What `estafeta bounces classify FILE…` shows: one row per file, as a table or as JSON, with the evidence
behind each verdict on request (`--explain`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from estafeta.bounces.engine import classify_message as classify
from estafeta.bounces.policy import DEFAULT_POLICY, Policy

_COLUMNS = ("file", "verdict", "reason", "suppresses", "recipients", "status", "source")
_VERDICT_STYLE = {"hard": "bold red", "soft": "yellow", "none": "green", "complaint": "magenta"}


def classify_files(paths: list[Path], policy: Policy = DEFAULT_POLICY) -> list[dict[str, Any]]:
    """Classify each file (see `classify_message`), naming it in a `file` column."""
    return [{"file": str(path), **classify_message(path.read_bytes(), policy)} for path in paths]


def classify_message(raw: bytes, policy: Policy = DEFAULT_POLICY) -> dict[str, Any]:
    """The verdict (hard, soft, none or complaint), reason, recipients, status code(s), what the report
    was read from, what it suppresses (global, account, none), and the evidence, as plain data."""
    found = classify(raw, policy)
    return {**found.as_dict(), "evidence": [{"rule": e.rule, "detail": e.detail} for e in found.evidence]}


def render_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Bounce classification")
    for column in _COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["file"],
            f"[{_VERDICT_STYLE.get(row['verdict'], '')}]{row['verdict']}[/]",
            row["reason"],
            row["suppresses"],
            ", ".join(row["recipients"]) or "—",
            row["status"] or "—",
            row["source"],
        )
    return table


def render_explanations(rows: list[dict[str, Any]]) -> Group:
    """Each file's verdict, then the rules that decided it and the words or fields they fired on."""
    lines: list[Text] = []
    for row in rows:
        style = _VERDICT_STYLE.get(row["verdict"], "")
        head = Text.assemble(
            (row["file"], "bold"),
            ": ",
            (row["verdict"], style),
            f" ({row['reason']}), suppresses {row['suppresses']}",
        )
        lines.append(head)
        for step in row["evidence"]:
            lines.append(Text.assemble("  ", (f"{step['rule']:<10}", "cyan"), " ", step["detail"]))
    return Group(*lines)


def render_json(rows: list[dict[str, Any]], *, explain: bool = False) -> str:
    shown = rows if explain else [{k: v for k, v in row.items() if k != "evidence"} for row in rows]
    return json.dumps(shown, indent=2, ensure_ascii=False)
