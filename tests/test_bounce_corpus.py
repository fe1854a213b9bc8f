"""Accuracy on real-world bounces (tests/data/bounces, labelled by hand in expected.csv).

The labels were written by reading each message, not by running the classifier; see tests/README.md
for where the messages come from.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from estafeta.bounces.report import classify_files, render_json, render_table

CORPUS = Path(__file__).parent / "data" / "bounces"

Labelled = list[tuple[dict[str, str], dict[str, Any]]]


@pytest.fixture(scope="module")
def labelled() -> Labelled:
    with (CORPUS / "expected.csv").open(newline="") as manifest:
        labels = list(csv.DictReader(manifest))
    rows = classify_files([CORPUS / label["file"] for label in labels])
    return list(zip(labels, rows, strict=True))


def test_manifest_covers_every_message() -> None:
    with (CORPUS / "expected.csv").open(newline="") as manifest:
        listed = {row["file"] for row in csv.DictReader(manifest)}
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.suffix in (".txt", ".eml")}
    assert listed == on_disk


def test_at_least_95_percent_of_verdicts_are_right(labelled: Labelled) -> None:
    wrong = [
        (label["file"], label["expected"], row["verdict"])
        for label, row in labelled
        if _verdict(row) != label["expected"]
    ]
    accuracy = 1 - len(wrong) / len(labelled)
    assert accuracy >= 0.95, f"accuracy {accuracy:.1%}; wrong: {wrong}"


def test_no_hard_bounce_is_taken_for_soft_or_deliverable(labelled: Labelled) -> None:
    missed = [
        (label["file"], row["verdict"])
        for label, row in labelled
        if label["expected"] == "hard" and row["verdict"] != "hard"
    ]
    assert missed == []


def test_rows_render_as_table_and_json(labelled: Labelled) -> None:
    rows = [row for _, row in labelled]
    console = Console(width=200, record=True)
    console.print(render_table(rows))
    text = console.export_text()
    assert "dsn_11.txt" in text and "user-unknown" in text
    decoded = json.loads(render_json(rows))
    assert len(decoded) == len(rows)
    assert set(decoded[0]) == {"file", "verdict", "reason", "recipients", "status", "source"}


def _verdict(row: dict[str, Any]) -> str:
    """A complaint is not a delivery failure, so it counts as `none`."""
    return "none" if row["verdict"] == "complaint" else str(row["verdict"])
