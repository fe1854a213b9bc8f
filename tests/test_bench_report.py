"""The table and JSON file every benchmark ends with."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from estafeta.bench.report import report


def test_many_runs_get_a_row_each_and_fit_80_columns_with_every_figure_whole(tmp_path: Path) -> None:
    runs = {
        f"{kind} {backend}{' 2 processes' if two else ''}": {
            "messages": 2000,
            "accept_msgs_per_s": 4302.6 if kind == "relay" else 452.6,
            "loadavg": f"5.53 4.51 {5 + two:.2f}",
            "relayed_msgs_per_s": 4102.6 if kind == "relay" else 402.6,
            "cpu_ms_per_msg": 3.36 + two,
            "rate_vs_postfix": 0.98 - two / 2,
            "cpu_vs_postfix": 2.71 + two,
        }
        for kind in ("pipeline", "relay")
        for backend in ("sqlite", "postgresql")
        for two in (False, True)
    }
    console = Console(width=80, record=True)
    report("compare", runs, tmp_path / "compare.json", console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "…" not in text  # nothing cut short
    row = next(line for line in lines if line.lstrip().startswith("relay sqlite") and "4,302.6" in line)
    assert "3.36" in row and "0.98" in row  # two decimals below 10: 0.98 is not 1.0
    assert "5.53 4.51 5.00" in row  # a load average's figures stay together on the run's line
    assert sum("4,302.6" in line for line in lines) == 4  # a row per run
    assert "messages: 2000" in text  # the same in every run: said once, under the table
    assert json.loads((tmp_path / "compare.json").read_text())["result"] == runs


def test_a_single_result_is_a_metric_per_row(tmp_path: Path) -> None:
    console = Console(width=80, record=True)
    report("campaign", {"contacts": 100000, "queued_s": 1.25}, tmp_path / "campaign.json", console)
    text = console.export_text()
    assert any("contacts" in line and "100000" in line for line in text.splitlines())
    assert any("queued_s" in line and "1.25" in line for line in text.splitlines())


def test_a_few_runs_of_many_metrics_get_a_column_each(tmp_path: Path) -> None:
    metrics = {f"metric_{n}_per_s": float(n) for n in range(12)}
    console = Console(width=80, record=True)
    report("pipeline", {"sqlite": metrics, "postgresql": metrics}, tmp_path / "pipeline.json", console)
    lines = console.export_text().splitlines()
    assert any("sqlite" in line and "postgresql" in line for line in lines)  # the runs head the columns
    assert any("metric_11_per_s" in line and line.count("11.0") == 2 for line in lines)
