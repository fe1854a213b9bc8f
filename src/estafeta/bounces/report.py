"""What `estafeta bounces classify FILE…` shows: one row per message file, as a table or as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from estafeta.bounces.arf import parse_complaint
from estafeta.bounces.dsn import parse_bounce

_COLUMNS = ("file", "verdict", "reason", "recipients", "status", "source")
_VERDICT_STYLE = {"hard": "bold red", "soft": "yellow", "none": "green", "complaint": "magenta"}


def classify_files(paths: list[Path]) -> list[dict[str, Any]]:
    """Classify each file (see `classify_message`), naming it in a `file` column."""
    return [{"file": str(path), **classify_message(path.read_bytes())} for path in paths]


def classify_message(raw: bytes) -> dict[str, Any]:
    """A bounce (verdict hard/soft/none) or, for an ARF report, a complaint: verdict, reason, recipients,
    status code(s) and what the verdict was read from."""
    complaint = parse_complaint(raw)
    if complaint is not None:
        return {
            "verdict": "complaint",
            "reason": complaint.feedback_type,
            "recipients": [complaint.original_rcpt_to] if complaint.original_rcpt_to else [],
            "status": None,
            "source": "arf",
        }
    report = parse_bounce(raw)
    statuses = list(dict.fromkeys(r.status for r in report.recipients if r.status))
    return {
        "verdict": report.kind.value,
        "reason": report.reason.value,
        "recipients": [r.address for r in report.recipients],
        "status": ", ".join(statuses) or None,
        "source": report.source,
    }


def render_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Bounce classification")
    for column in _COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["file"],
            f"[{_VERDICT_STYLE.get(row['verdict'], '')}]{row['verdict']}[/]",
            row["reason"],
            ", ".join(row["recipients"]) or "—",
            row["status"] or "—",
            row["source"],
        )
    return table


def render_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False)
